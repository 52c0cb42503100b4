"""The stage registry and the part-stage core: params a stage may read, inputs as DVC deps, locks, faults.

Real CLI runs and real `dvc repro` in projects made by `vertical-dag init`; faults are real (a second
process holding the lock, a full tmpfs, an unreadable file).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vertical_dag.params import Params
from vertical_dag.project import Project
from vertical_dag.records import file_sha256, read_ledger, read_parts
from vertical_dag.stages import STAGES
from vertical_dag.stages.context import ParamsView, UndeclaredParam, declared_keys
from vertical_dag.stages.executor import WORKER_NICE, LocalPool
from vertical_dag.stages.lock import stage_lock
from vertical_dag.stages.parts import PartResult, PartStore, Unit, _fingerprint_of_planned, run_units

from .conftest import BIN, REPO, run_cli

WORDS = ("party shall agree terms payment notice court section clause liability damages goods seller buyer "
         "delivery warranty invoice termination breach remedy").split()


def write_docs(path: Path, n: int, seed: int, prefix: str = "d") -> Path:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"{prefix}{i}", "text": " ".join(rng.choice(WORDS) for _ in range(60))}) + "\n")
    return path


def write_span_pairs(path: Path, pairs: int, seed: int) -> Path:
    """Pairs of documents sharing one 30-word span and nothing else: too different to be duplicates or one
    template family, so pairs straddle splits and decontamination has spans to cut."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(pairs):
            span = [rng.choice(WORDS) for _ in range(30)]
            for side in "ab":
                text = span + [rng.choice(WORDS) for _ in range(60)]
                f.write(json.dumps({"id": f"pair{i}{side}", "text": " ".join(text)}) + "\n")
    return path


def dvc(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=project, capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"dvc {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def kept_ids(project: Path, stage_dir: str) -> set[str]:
    return set(read_parts(project / stage_dir / "parts").column("doc_id").to_pylist())


# ---------------------------------------------------------------- the registry


def test_a_stage_reads_only_the_params_it_declares():
    spec = STAGES["dedup"]
    view = ParamsView(Params(), declared_keys(spec), "dedup")
    assert view.dedup.threshold == 0.7 and view.gates.max_duplicate_rate == 0.9
    with pytest.raises(UndeclaredParam, match="finetune"):
        _ = view.finetune.lr
    with pytest.raises(UndeclaredParam, match="gates.max_contamination"):
        _ = view.gates.max_contamination


def test_every_gate_reads_only_declared_params():
    """Each stage's suite is built from a view that refuses undeclared keys: changing any bound it reads
    re-runs that stage under DVC, and no other."""
    from vertical_dag.quality.suites import SUITES

    for name, suite in SUITES.items():
        suite(ParamsView(Params(), declared_keys(STAGES[name]), name))


def test_changing_a_gate_bound_reruns_only_that_stage(project: Path):
    write_docs(project / "data/raw/docs/a.jsonl", 60, 1)
    dvc(project, "repro", "dedup")
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("max_duplicate_rate: 0.9", "max_duplicate_rate: 0.8"))
    status = json.loads(dvc(project, "status", "--json").stdout)
    assert "dedup" in status and "ingest" not in status
    assert any("gates.max_duplicate_rate" in json.dumps(c) for c in status["dedup"])


def test_a_base_model_folder_anywhere_is_a_dependency(project: Path, tmp_path: Path, tokenizer_dir: Path):
    from vertical_dag.modeling.tiny import build_tiny_llama

    model = build_tiny_llama(tokenizer_dir, tmp_path / "elsewhere" / "tiny")  # outside the project
    params = project / "params.yaml"
    text = params.read_text().replace("source: data/cache/models", f"source: {model}")
    params.write_text(text)
    dvc(project, "repro", "base_model")
    assert (project / "data/models/base/model/model.safetensors").exists()
    inputs = json.loads((project / "data/inputs/base_model.json").read_text())
    assert "model.safetensors" in inputs["paths"]["base_model.source"]["files"]
    assert "Stage 'base_model' didn't change" in dvc(project, "repro", "base_model").stdout
    with open(model / "config.json", "a") as f:
        f.write("\n")  # the user's model folder changed: the stage re-runs
    assert "Running stage 'base_model'" in dvc(project, "repro", "base_model").stdout


def test_a_missing_path_in_params_exits_2_naming_the_key(project: Path):
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("source: data/cache/models", "source: /nowhere/model"))
    proc = run_cli("run", "base_model", cwd=project, check=False)
    assert proc.returncode == 2
    assert "base_model.source = '/nowhere/model'" in proc.stderr and "no such file" in proc.stderr


# ---------------------------------------------------------------- the part-stage core


def test_bad_params_under_dvc_keep_the_last_good_gate_and_metrics(project: Path):
    write_docs(project / "data/raw/docs/a.jsonl", 30, 1)
    dvc(project, "repro", "ingest")
    gate, metrics = project / "data/gates/ingest.json", project / "data/metrics/ingest.json"
    before = gate.read_text(), metrics.read_text()
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("max_quarantine_rate: 0.05", "max_quarantine_rate: lots"))
    assert dvc(project, "repro", "ingest", check=False).returncode != 0
    assert (gate.read_text(), metrics.read_text()) == before


def test_a_second_run_of_a_stage_waits_for_nobody_and_touches_nothing(project: Path):
    write_docs(project / "data/raw/docs/a.jsonl", 20, 1)
    with stage_lock(Project(project), "ingest"):
        proc = run_cli("run", "ingest", cwd=project, check=False)
    assert proc.returncode == 1
    assert "already running" in proc.stderr and f"pid {os.getpid()}" in proc.stderr
    assert not (project / "data/ingested").exists()
    run_cli("run", "ingest", cwd=project)  # free again


def run_without_root_powers(project: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI as a user who cannot read a file whose mode says so (root without CAP_DAC_OVERRIDE)."""
    capsh = shutil.which("capsh")
    if os.geteuid() != 0:
        cmd = [str(BIN / "vertical-dag"), *args]
    elif capsh:
        cmd = [capsh, "--drop=cap_dac_override,cap_dac_read_search", "--", "-c",
               " ".join(["exec", str(BIN / "vertical-dag"), *args])]
    else:
        pytest.skip("running as root without capsh: a file root cannot read cannot be made")
    return subprocess.run(cmd, cwd=project, capture_output=True, text=True)


def test_an_unreadable_file_is_read_again_once_it_is_fixed(project: Path):
    path = write_docs(project / "data/raw/docs/a.jsonl", 2, 1)
    path.chmod(0)
    proc = run_without_root_powers(project, "run", "ingest", "--no-gate", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["drops_by_reason"] == {"unreadable": 1}
    assert kept_ids(project, "data/ingested") == set()
    path.chmod(0o644)  # same size and mtime as before: only the missing hash says it was never read
    out = json.loads(run_without_root_powers(project, "run", "ingest", "--no-gate", "--json").stdout)
    assert out["documents_out"] == 2 and out["quarantined"] == 0
    assert len(kept_ids(project, "data/ingested")) == 2


def test_arrival_order_not_file_names_decides_duplicates(project: Path, tmp_path: Path):
    """A batch whose file name sorts first but arrives last gives the same kept set as a from-scratch
    run of the same arrival order."""
    raw = project / "data/raw/docs"
    write_docs(raw / "m_first.jsonl", 40, 7, prefix="old")
    run_cli("run", "ingest", "--no-gate", cwd=project)
    run_cli("run", "dedup", "--no-gate", cwd=project)
    shutil.copy(raw / "m_first.jsonl", tmp_path / "copy.jsonl")
    lines = (raw / "m_first.jsonl").read_text().splitlines()
    (raw / "a_later.jsonl").write_text("\n".join(ln.replace('"old', '"new') for ln in lines) + "\n")
    run_cli("run", "ingest", "--no-gate", cwd=project)
    incremental = json.loads(run_cli("run", "dedup", "--no-gate", "--json", cwd=project).stdout)
    assert incremental["rebuilt"] is None and incremental["new_parts"] == 1
    kept = kept_ids(project, "data/deduplicated")
    assert all(k for k in kept) and len(kept) == 40  # the later copies are the duplicates, whatever their name
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("num_perm: 128", "num_perm: 64"))  # forces a rebuild
    rebuilt = json.loads(run_cli("run", "dedup", "--no-gate", "--json", cwd=project).stdout)
    assert rebuilt["rebuilt"] and kept_ids(project, "data/deduplicated") == kept


@pytest.fixture
def small_disk(project: Path):
    """data/normalized (or any stage folder) on a tmpfs of a few hundred KB: a real full disk."""
    mounts: list[Path] = []

    def mount(rel: str, size: str) -> Path:
        target = project / rel
        target.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                              capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}): a full disk cannot be made")
        mounts.append(target)
        return target

    yield mount
    for m in mounts:
        subprocess.run(["umount", str(m)], capture_output=True)


def test_parts_that_fail_on_a_full_disk_are_redone(project: Path, small_disk):
    raw = project / "data/raw/docs"
    for i in range(4):
        write_docs(raw / f"b{i}.jsonl", 400, i, prefix=f"b{i}-")
    run_cli("run", "ingest", "--no-gate", cwd=project)
    run_cli("run", "dedup", "--no-gate", cwd=project)
    folder = small_disk("data/normalized", "120k")
    proc = run_cli("run", "normalize", "--no-gate", cwd=project, check=False)
    assert proc.returncode == 1 and "no space left on device" in proc.stderr
    state = json.loads((folder / "state.json").read_text())
    assert len(state["units"]) < 4  # failed parts are not recorded as done
    assert not list(folder.rglob(".*.tmp"))
    subprocess.run(["mount", "-o", "remount,size=50m", str(folder)], check=True)
    out = json.loads(run_cli("run", "normalize", "--json", cwd=project).stdout)  # gate included
    assert out["documents_in"] == 1600 == out["documents_out"] + out["dropped"]
    assert len(json.loads((folder / "state.json").read_text())["units"]) == 4


def test_dedup_on_a_full_disk_says_what_ran_out(project: Path, small_disk):
    write_docs(project / "data/raw/docs/a.jsonl", 3000, 1)
    run_cli("run", "ingest", "--no-gate", cwd=project)
    small_disk("data/deduplicated", "600k")
    proc = run_cli("run", "dedup", "--no-gate", cwd=project, check=False)
    assert proc.returncode == 1, proc.returncode  # not killed by SIGBUS (-7)
    assert "no space left on device" in proc.stderr


def test_stale_temporaries_never_stay_in_outputs(project: Path):
    write_docs(project / "data/raw/docs/a.jsonl", 30, 1)
    run_cli("run", "ingest", "--no-gate", cwd=project)
    run_cli("run", "dedup", "--no-gate", cwd=project)
    for rel in ("data/deduplicated/parts", "data/normalized/parts", "data/normalized/ledger", "data/splits"):
        (project / rel).mkdir(parents=True, exist_ok=True)
        (project / rel / ".x.parquet.abc.tmp").write_bytes(b"left by a killed run")
    for stage in ("dedup", "normalize", "split"):  # split writes no parts: it cleans up all the same
        run_cli("run", stage, "--no-gate", cwd=project)
    assert not list((project / "data").rglob(".*.tmp"))


DATA_STAGES = ("ingest", "dedup", "normalize", "split")


def data_outputs(project: Path) -> dict[str, list]:
    """Every data stage's parts (split: its three files) and ledger rows."""
    out = {stage: [pq.read_table(p).to_pylist() for p in sorted((project / STAGES[stage].out / "parts").glob("*.parquet"))]
           for stage in ("ingest", "dedup", "normalize")}
    out["split"] = [pq.read_table(project / f"data/splits/{name}.parquet").to_pylist() for name in ("train", "validation", "test")]
    for stage in DATA_STAGES:
        out[f"{stage} ledger"] = read_ledger(project / STAGES[stage].out / "ledger").to_pylist()
    return out


def test_local_pool_gives_the_same_outputs_as_one_process(project: Path, tmp_path: Path):
    raw = project / "data/raw/docs"
    for i in range(3):
        write_docs(raw / f"p{i}.jsonl", 200, i, prefix=f"p{i}-")
    write_span_pairs(raw / "pairs.jsonl", 60, 7)
    params = project / "params.yaml"
    results = {}
    for workers in ("1", "2"):
        params.write_text(params.read_text().replace("workers: auto", f"workers: {workers}")
                          .replace("workers: 1", f"workers: {workers}"))
        for stage in DATA_STAGES:
            shutil.rmtree(project / STAGES[stage].out, ignore_errors=True)
            out = json.loads(run_cli("run", stage, "--no-gate", "--json", cwd=project).stdout)
            if stage != "dedup":
                assert out["workers"] == int(workers)
        results[workers] = data_outputs(project)
    cut = [r for r in results["1"]["split ledger"] if r["reason"] == "contaminated_span"]
    assert len(cut) >= 3  # spans shared across splits were found and cut, the same way by both
    assert results["1"] == results["2"]


def test_pool_workers_leave_the_stage_process_a_core():
    # the stage's own process makes the in-order decisions (dedup) and writes: with as many workers as
    # cores at equal priority it got two thirds of a core, and the 2-worker run lost a third of its gain
    own = os.getpriority(os.PRIO_PROCESS, 0)
    pool = LocalPool(2)
    try:
        niceness = list(pool.map(functools.partial(os.getpriority, os.PRIO_PROCESS), [0] * 4))
    finally:
        pool.close()
    assert niceness == [max(own, WORKER_NICE)] * 4
    assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the stage's process keeps its priority


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; only its entry waits for whoever adopted it


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_killed_stage_leaves_no_pool_or_gate_process_behind(tmp_path: Path):
    # SIGKILL runs no cleanup: the pool's workers and the gate process must end with the stage's process
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent("""
        import os, time
        from vertical_dag.quality.gate_process import GateProcess
        from vertical_dag.stages.executor import LocalPool

        if __name__ == "__main__":
            pool, gate = LocalPool(2), GateProcess()
            list(pool.map(abs, range(8)))  # the workers are up
            gate._pool.submit(abs, 1).result()  # the gate process is up
            print(" ".join(str(p) for p in [*pool._pool._processes, *gate._pool._processes]), flush=True)
            time.sleep(600)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    children = [int(p) for p in proc.stdout.readline().split()]
    assert len(children) == 3 and all(_alive(p) for p in children)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in children if _alive(p)]


def file_sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_new_inputs_are_hashed_while_the_stage_works_and_a_file_changed_meanwhile_is_read_again(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    units = []
    original_b = file_sha256_of(b"b" * 100_000)
    for name in ("a", "b", "c"):
        (raw / f"{name}.txt").write_bytes(name.encode() * 100_000)
        units.append(Unit(name, raw / f"{name}.txt", name))
    log = logging.getLogger("test-parts")
    store = PartStore(tmp_path / "out", "s1", log)
    plan = store.plan(units)
    assert [u.key for u in plan.todo] == ["a", "b", "c"] and plan.new == 3
    (raw / "b.txt").write_bytes(b"edited after the plan")  # the run may have read either version
    os.utime(raw / "b.txt", ns=(1, 1))
    for u in units:
        store.parts_dir.mkdir(parents=True, exist_ok=True)
        store.part_path(u.part).write_bytes(b"part")
        store.commit(u, PartResult())
    store.close()
    store.save()
    recorded = {k: e["fingerprint"]["sha256"] for k, e in store.units.items()}
    assert recorded["a"] == file_sha256(raw / "a.txt") and recorded["c"] == file_sha256(raw / "c.txt")
    # hashed before the edit: the old bytes' hash (the edit's new mtime makes the next run look again);
    # hashed after it: no hash, as the file is no longer the planned one
    assert recorded["b"] in (None, original_b)

    again = PartStore(tmp_path / "out", "s1", log).plan(units)
    assert [u.key for u in again.todo] == ["b"] and sorted(again.unchanged) == ["a", "c"]


def test_new_inputs_are_hashed_once_the_units_run_so_a_stage_failing_before_leaves_no_hashing(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    units = []
    for name in ("a", "b", "c"):
        (raw / f"{name}.txt").write_bytes(name.encode() * 200_000)
        units.append(Unit(name, raw / f"{name}.txt", name))
    store = PartStore(tmp_path / "out", "s1", logging.getLogger("test-parts"))
    before = set(threading.enumerate())
    plan = store.plan(units)
    assert plan.new == 3
    # a stage that raised here (its executor refused) would exit at once: nothing is hashing
    assert not [t for t in threading.enumerate() if t not in before and t.name.startswith("part-hash")]

    def work(unit: Unit) -> PartResult:
        store.parts_dir.mkdir(parents=True, exist_ok=True)
        store.part_path(unit.part).write_bytes(b"part")
        return PartResult()

    assert run_units(store, plan.todo, work) == []
    assert {k: e["fingerprint"]["sha256"] for k, e in store.units.items()} == \
        {u.key: file_sha256(u.path) for u in units}


def test_a_file_that_is_not_the_planned_one_gets_no_hash(tmp_path: Path):
    path = tmp_path / "f.txt"
    path.write_text("some text")
    st = path.stat()
    assert _fingerprint_of_planned(path, (st.st_size, st.st_mtime_ns))["sha256"] == file_sha256(path)
    assert _fingerprint_of_planned(path, (st.st_size + 1, st.st_mtime_ns))["sha256"] is None
    assert _fingerprint_of_planned(tmp_path / "gone.txt", (1, 1))["sha256"] is None
