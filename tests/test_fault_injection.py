"""Kill -9 each data stage at random moments; the rerun must give exactly what a clean run gives.

Real processes, real SIGKILL, fresh and incremental: after every kill the stage is run again to the end
(with the stages after it), and every stage's documents and ledger must equal those of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .conftest import BIN, run_cli
from .test_stage_core import write_docs

STAGES = ("ingest", "dedup", "normalize", "split")
FOLDERS = ("data/ingested", "data/deduplicated", "data/normalized", "data/splits")


def outputs(project: Path) -> dict[str, list]:
    """Every stage's rows (documents and ledger), order-free, with the split each document went to."""
    out: dict[str, list] = {}
    for folder in FOLDERS:
        rows = []
        for f in sorted((project / folder).rglob("*.parquet")):
            if "index" in f.parts:
                continue
            t = pq.read_table(f)
            cols = [c for c in ("doc_id", "text", "action", "reason", "ref_doc_id", "split", "family_id") if c in t.column_names]
            rows += [json.dumps({c: r[c] for c in cols}, sort_keys=True, ensure_ascii=False) for r in t.to_pylist()]
        out[folder] = sorted(rows)
    assert not list((project / "data").rglob(".*.tmp")), "a temporary file was left inside an output"
    return out


def run_all(project: Path, start: int = 0) -> None:
    for stage in STAGES[start:]:
        run_cli("run", stage, cwd=project)


def kill_during(project: Path, stage: str, after: float) -> bool:
    """Start the stage, SIGKILL it after `after` seconds; True when it was still running."""
    proc = subprocess.Popen([str(BIN / "vertical-dag"), "run", stage], cwd=project, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(after)
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return alive


def make(root: Path, batches: int) -> Path:
    run_cli("init", str(root), cwd=root.parent)
    for i in range(batches):
        write_docs(root / f"data/raw/docs/b{i}.jsonl", 600, i, prefix=f"b{i}-")
        shutil.copy(root / f"data/raw/docs/b{i}.jsonl", root / f"data/raw/docs/c{i}.jsonl")  # duplicates
    return root


@pytest.mark.slow
def test_killed_data_stages_rerun_to_a_clean_run(tmp_path: Path):
    clean = make(tmp_path / "clean", 3)
    started = {}
    for stage in STAGES:
        t0 = time.perf_counter()
        run_cli("run", stage, cwd=clean)
        started[stage] = time.perf_counter() - t0
    reference = outputs(clean)
    rng = random.Random(7)
    killed = 0
    for trial in range(2):
        for k, stage in enumerate(STAGES):
            project = make(tmp_path / f"t{trial}-{stage}", 3)
            for s in STAGES[:k]:
                run_cli("run", s, cwd=project)
            killed += kill_during(project, stage, rng.uniform(0.3, max(0.4, started[stage] * 0.9)))
            run_all(project, k)
            assert outputs(project) == reference, (trial, stage)
    assert killed >= 4  # most kills landed while the stage was working


@pytest.mark.slow
def test_killed_incremental_run_reruns_to_a_clean_run(tmp_path: Path):
    """A new batch arrives; the stages are killed while taking it in, then rerun."""
    clean = make(tmp_path / "clean", 3)
    run_all(clean)
    reference = outputs(clean)
    project = make(tmp_path / "inc", 2)
    run_all(project)
    write_docs(project / "data/raw/docs/b2.jsonl", 600, 2, prefix="b2-")
    shutil.copy(project / "data/raw/docs/b2.jsonl", project / "data/raw/docs/c2.jsonl")
    for stage in STAGES:
        kill_during(project, stage, 0.8)
        run_cli("run", stage, cwd=project)
    assert outputs(project) == reference
