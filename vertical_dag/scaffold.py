"""`vertical-dag init DIR`: a new vertical project that runs once raw files are dropped into data/raw/<source>/."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

TEMPLATES = resources.files("vertical_dag") / "templates"


class InitError(RuntimeError):
    pass


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def init_project(root: Path, domain: str = "general", force: bool = False) -> Path:
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    for name in ("params.yaml", "dvc.yaml"):
        if (root / name).exists() and not force:
            raise InitError(f"{root / name} exists; pass --force to overwrite")
    params = (TEMPLATES / "params.yaml").read_text(encoding="utf-8").replace("domain: general ", f"domain: {domain} ")
    (root / "params.yaml").write_text(params.replace("name: my-vertical", f"name: {root.name}"), encoding="utf-8")
    from .dvcyaml import render

    (root / "dvc.yaml").write_text(render(), encoding="utf-8")
    (root / "data" / "raw").mkdir(parents=True, exist_ok=True)
    (root / "data" / "raw" / ".gitkeep").touch()
    if not (root / "dagster.yaml").exists():  # the `dvc` pool sized 1 for `dagster dev` in this folder
        (root / "dagster.yaml").write_text((TEMPLATES / "dagster.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    gitignore = root / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text((TEMPLATES / "gitignore").read_text(encoding="utf-8"), encoding="utf-8")
    if not (root / ".git").exists():
        _git(root, "init", "-q")
    if not (root / ".dvc").exists():
        dvc = shutil.which("dvc")
        if dvc is None:
            raise InitError("dvc is not on PATH; install vertical_dag into the environment you run it from")
        subprocess.run([dvc, "init", "-q"], cwd=root, check=True, capture_output=True)
        subprocess.run([dvc, "config", "core.analytics", "false"], cwd=root, check=True, capture_output=True)
    return root
