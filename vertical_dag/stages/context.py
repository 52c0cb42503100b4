"""What a stage gets to work with, and the runner shared by the CLI, DVC and Dagster."""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..params import Params, load_params
from ..pipes import report_stage
from ..project import Project
from ..records import write_json
from . import STAGES, StageSpec


@dataclass(frozen=True)
class StageContext:
    project: Project
    params: Params
    spec: StageSpec
    log: logging.Logger

    @property
    def out(self) -> Path:
        return self.project.root / self.spec.out

    @property
    def ledger_dir(self) -> Path:
        return self.out / "ledger"


class GateFailed(RuntimeError):
    """A quality gate failed: the stage's outputs must not be recorded as good."""


def stage_logger(name: str) -> logging.Logger:
    log = logging.getLogger(f"vertical_dag.{name}")
    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return log


def run_stage(name: str, project: Project, *, gate: bool = True) -> dict[str, Any]:
    """Validate params, run one stage, write its metrics.json, then run its quality gate (if any)."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    spec = STAGES[name]
    params = load_params(project.params_file)  # raises ParamsError before any output is touched
    log = stage_logger(name)
    module = importlib.import_module(f"vertical_dag.stages.{spec.module}")
    ctx = StageContext(project=project, params=params, spec=spec, log=log)
    started = time.perf_counter()
    metrics = module.run(ctx)
    metrics.setdefault("seconds", round(time.perf_counter() - started, 3))
    write_json(metrics, project.metrics_file(name))
    report_stage(name, metrics)  # to the Dagster run that launched this one through `dvc repro`, if any
    log.info("%s done in %.1f s; metrics in %s", name, metrics["seconds"], project.rel(project.metrics_file(name)))
    from ..quality import gate as quality_gate

    if not params.gates.enabled:
        quality_gate.skip_gate(ctx, "gates.enabled is false in params.yaml")
    elif not gate:
        quality_gate.skip_gate(ctx, "run with --no-gate")
    else:
        result = quality_gate.run_gate(ctx, metrics)
        if not result.success:
            raise GateFailed(result.failure_message())
    return metrics
