"""Shared pieces of the Dagster tests: temporary copies of this project, generated raw batches, a real instance.

The raw set is small generated Chinese-like text (two batches), so every data stage runs in seconds.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import yaml

from vertical_dag.defs.pipeline import load_pipeline
from vertical_dag.project import Project

from .conftest import BIN, REPO

EXPECTED = [
    "raw_sources",
    "raw_documents",
    "deduplicated",
    "normalized",
    "splits",
    "base_model",
    "pretrained_checkpoint",
    "finetuned_model",
    "eval_report",
]
DATA_STAGES = ("ingest", "dedup", "normalize", "split")
HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研"


def write_batch(root: Path, name: str, n: int, seed: int) -> Path:
    """One raw JSONL batch of n Chinese-like articles, a few of them exact repeats (real duplicates)."""
    rng = random.Random(seed)
    texts = [
        "第" + str(i + 1) + "条 " + "".join(rng.choice(HAN) for _ in range(rng.randint(40, 240))) + "。"
        for i in range(n)
    ]
    for i in range(0, n, 25):  # every 25th article repeats an earlier one
        texts[i] = texts[max(0, i - 7)]
    path = root / "data" / "raw" / "china_law" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"id": f"{name}-{i}", "text": t, "law_name": f"测试法{seed}"}, ensure_ascii=False)
        for i, t in enumerate(texts)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sh(*cmd: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_project(dest: Path, extra_stages: dict | None = None, params_patch: dict | None = None) -> Project:
    """This project's params.yaml / dvc.yaml / dagster.yaml and the stage code (dvc.yaml has code deps on it)."""
    dest.mkdir(parents=True)
    for name in ("params.yaml", "dvc.yaml", "dagster.yaml"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(
        REPO / "vertical_dag", dest / "vertical_dag", ignore=shutil.ignore_patterns("__pycache__")
    )
    if extra_stages:
        dvc = yaml.safe_load((dest / "dvc.yaml").read_text())
        dvc["stages"].update(extra_stages)
        (dest / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    if params_patch:
        params = yaml.safe_load((dest / "params.yaml").read_text())
        for section, values in params_patch.items():
            params[section] = {**(params.get(section) or {}), **values}
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    sh("git", "init", "-q", cwd=dest)
    sh(str(BIN / "dvc"), "init", "-q", cwd=dest)
    return Project(dest)


def runnable_data_keys(project: Project) -> list[str]:
    return [n.asset for n in load_pipeline(project) if n.runnable and n.name in DATA_STAGES]


def materializations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetMaterialization]:
    return {
        e.asset_key.to_user_string(): e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
    }


def run_assets(
    defs: dg.Definitions, keys: list[str], instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        asset_selection=[dg.AssetKey(k) for k in keys], instance=instance, raise_on_error=False
    )


# ---------------------------------------------------------------- the graph (no DVC run)
