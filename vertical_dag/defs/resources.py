"""The one resource: DVC in the project folder. Runs a single stage and streams its log into the Dagster run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

DVC_POOL = "dvc"  # every DVC-running asset is in this pool, sized 1: DVC locks the repository
_PROGRESS = re.compile(r"\d+%\||it/s|s/it|\d+/\d+ \[")  # tqdm refreshes: log only every few seconds
# "<time> <logger> INFO ..." from libraries the stage uses (not vertical_dag.*): kept for errors, not streamed
_LIBRARY_CHATTER = re.compile(r"^\S+ \S+ (?!vertical_dag)[\w.]+ (?:INFO|DEBUG) ")


@dataclass
class DvcRun:
    stage: str
    returncode: int
    seconds: float
    skipped: bool  # DVC found the stage unchanged and did not run its command
    started: float  # time.time() at start, to tell this run's gate file from an older one
    tail: list[str] = field(default_factory=list)


def _venv_bin() -> str:
    return str(Path(sys.executable).parent)


class DvcResource(dg.ConfigurableResource):
    """`dvc repro --single-item STAGE` in `project_root`: dvc.lock stays the one record of what was built."""

    project_root: str
    progress_every_s: float = 5.0

    @property
    def root(self) -> Path:
        return Path(self.project_root)

    def _command(self, *args: str) -> list[str]:
        local = Path(_venv_bin()) / "dvc"  # the dvc installed next to this Python, else the one on PATH
        return [str(local) if local.exists() else (shutil.which("dvc") or "dvc"), *args]

    def _env(self) -> dict[str, str]:
        # the stage command `vertical-dag run` must resolve to this installation
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "VERTICAL_DAG_PROJECT": str(self.root)}
        env["PATH"] = f"{_venv_bin()}{os.pathsep}{env.get('PATH', '')}"
        return env

    def repro(self, stage: str, log: dg.DagsterLogManager | None = None) -> DvcRun:
        cmd = self._command("repro", "--single-item", "inputs", stage)  # inputs: code + user-named paths
        started, t0 = time.time(), time.perf_counter()
        tail: deque[str] = deque(maxlen=40)
        skipped, last_progress = False, 0.0
        if log:
            log.info(f"$ {' '.join(['dvc', *cmd[1:]])}  (in {self.root})")
        proc = subprocess.Popen(
            cmd,
            cwd=self.root,
            env=self._env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        assert proc.stdout is not None
        for raw in proc.stdout:  # universal newlines: tqdm's \r refreshes arrive as lines too
            line = raw.rstrip()
            if not line:
                continue
            tail.append(line)
            skipped |= "didn't change, skipping" in line
            if _LIBRARY_CHATTER.match(line):
                continue
            if _PROGRESS.search(line):
                now = time.perf_counter()
                if now - last_progress < self.progress_every_s:
                    continue
                last_progress = now
            if log:
                log.info(f"[{stage}] {line}")
        rc = proc.wait()
        return DvcRun(stage, rc, round(time.perf_counter() - t0, 3), skipped, started, list(tail))

    def status(self, *stages: str) -> str:
        """`dvc status STAGE...` output ('' or 'up to date' when nothing would run)."""
        proc = subprocess.run(
            self._command("status", *stages), cwd=self.root, env=self._env(), capture_output=True, text=True
        )
        return proc.stdout + proc.stderr
