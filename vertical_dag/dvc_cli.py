"""DVC's machine-readable answers, from the `dvc` command (DVC lives in its own environment, never imported).

`dvc status --json STAGE` says whether `dvc repro` would run a stage; `dvc ls --json --show-hash` gives the
content hash DVC recorded for an output. Nothing here imports Dagster (scaffold and defs both use it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any


class DvcError(RuntimeError):
    pass


def dvc_executable() -> str:
    """The dvc linked next to this Python (scripts/setup.sh puts it there), else the one on PATH."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def dvc_json(root: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run `dvc ARGS --json` in root and parse its output; DvcError names the command and DVC's message."""
    cmd = [dvc_executable(), *args, "--json"]
    proc = subprocess.run(cmd, cwd=root, env=env or {**os.environ}, capture_output=True, text=True)
    if proc.returncode:
        raise DvcError(f"`dvc {' '.join(args)} --json` exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}")
    text = proc.stdout.strip()
    return json.loads(text) if text else {}


def stage_changes(root: Path, stage: str, env: dict[str, str] | None = None) -> list[Any]:
    """What `dvc status --json STAGE` reports changed for the stage ([] when `dvc repro` would skip it)."""
    status = dvc_json(root, "status", stage, env=env)
    return list(status.get(stage) or []) if isinstance(status, dict) else []


def out_hashes(root: Path, outs: list[str], env: dict[str, str] | None = None) -> dict[str, str]:
    """{out path: hash DVC recorded} for outputs of the pipeline, one `dvc ls` per parent folder."""
    by_parent: dict[str, list[str]] = {}
    for out in outs:
        p = PurePosixPath(out.rstrip("/"))
        by_parent.setdefault(str(p.parent), []).append(p.name)
    found: dict[str, str] = {}
    for parent, names in by_parent.items():
        try:
            entries = dvc_json(root, "ls", "--show-hash", ".", parent, env=env)
        except DvcError:  # the folder does not exist: nothing of it was recorded
            continue
        for entry in entries if isinstance(entries, list) else []:
            if entry.get("path") in names and entry.get("isout") and entry.get("md5"):
                found[str(PurePosixPath(parent) / entry["path"])] = str(entry["md5"])
    return found
