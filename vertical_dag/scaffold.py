"""`vertical-dag init DIR`: a new vertical project that runs once raw files are dropped into data/raw/<source>/."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from .dvc_cli import dvc_executable

TEMPLATES = resources.files("vertical_dag") / "templates"


class InitError(RuntimeError):
    pass


def _dist_name(name: str) -> str:
    """A valid project name for pyproject.toml (PEP 508: letters, digits, '-', '_', '.')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")
    return cleaned or "vertical-project"


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def init_project(root: Path, domain: str = "general", force: bool = False, remote: str | None = None) -> Path:
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
    if not (root / "pyproject.toml").exists():  # a `dg` project whose definitions come from vertical_dag
        pyproject = (TEMPLATES / "pyproject.toml").read_text(encoding="utf-8")
        (root / "pyproject.toml").write_text(pyproject.replace("PROJECT_NAME", _dist_name(root.name)), encoding="utf-8")
    defs_module = root / "vertical_defs" / "__init__.py"
    if not defs_module.exists():  # the `dg` project's module: vertical_dag's definitions for this folder
        defs_module.parent.mkdir(exist_ok=True)
        defs_module.write_text((TEMPLATES / "vertical_defs.py").read_text(encoding="utf-8"), encoding="utf-8")
    if not (root / "dagster.yaml").exists():  # the `dvc` pool sized 1 for `dagster dev` in this folder
        (root / "dagster.yaml").write_text((TEMPLATES / "dagster.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    gitignore = root / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text((TEMPLATES / "gitignore").read_text(encoding="utf-8"), encoding="utf-8")
    if not (root / ".git").exists():
        _git(root, "init", "-q")
    dvc = dvc_executable()
    if shutil.which(dvc) is None and (remote or not (root / ".dvc").exists()):
        raise InitError('dvc is not on PATH; install it as a tool: `pipx install "dvc>=3.50,<4"` (or `uv tool install dvc`)')
    if not (root / ".dvc").exists():
        subprocess.run([dvc, "init", "-q"], cwd=root, check=True, capture_output=True)
        subprocess.run([dvc, "config", "core.analytics", "false"], cwd=root, check=True, capture_output=True)
    if remote:  # `dvc push` then versions data and checkpoints there; .dvc/config is committed with the project
        proc = subprocess.run([dvc, "remote", "add", "--default", "--force", "storage", remote],
                              cwd=root, capture_output=True, text=True)
        if proc.returncode:
            raise InitError(f"--remote {remote!r}: dvc remote add failed: {(proc.stderr or proc.stdout).strip()}")
    return root
