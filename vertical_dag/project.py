"""Locating a vertical project (a folder with params.yaml and dvc.yaml) and its standard paths."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class ProjectNotFound(RuntimeError):
    pass


@dataclass(frozen=True)
class Project:
    """A vertical project folder. Every path the stages use is derived here, so layouts stay in one place."""

    root: Path

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def raw(self) -> Path:
        return self.data / "raw"

    def stage_dir(self, name: str) -> Path:
        """Persistent output folder of a data stage (e.g. data/ingested)."""
        return self.data / name

    @property
    def metrics_dir(self) -> Path:
        return self.data / "metrics"

    def metrics_file(self, stage: str) -> Path:
        return self.metrics_dir / f"{stage}.json"

    @property
    def gates_dir(self) -> Path:
        return self.data / "gates"

    @property
    def models_dir(self) -> Path:
        return self.data / "models"

    @property
    def reports_dir(self) -> Path:
        return self.data / "reports"

    def rel(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)


def find_project(start: Path | str | None = None) -> Project:
    """Walk up from `start` (or $VERTICAL_DAG_PROJECT, or the cwd) to the folder holding params.yaml + dvc.yaml."""
    env = os.environ.get("VERTICAL_DAG_PROJECT")
    here = Path(start or env or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return Project(folder)
    raise ProjectNotFound(
        f"no vertical project found at or above {here} (looked for params.yaml and dvc.yaml); "
        "create one with `vertical-dag init DIR`"
    )
