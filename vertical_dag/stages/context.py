"""What a stage gets to work with, and the runner shared by the CLI, DVC and Dagster."""

from __future__ import annotations

import importlib
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..params import Params, load_params
from ..pipes import report_stage
from ..project import Project
from ..records import remove_temporaries
from . import STAGES, Stage
from .lock import stage_lock
from .metrics import write_stage_metrics


class UndeclaredParam(AttributeError):
    """A stage read a params key its registry entry does not declare (so DVC would not re-run it)."""


class ParamsView:
    """Params as a stage may read them: only the sections and keys its registry entry declares.

    DVC re-runs a stage when a declared key changes; reading an undeclared one would make the stage depend on
    something DVC does not watch, so it fails loudly instead (in tests, on the first run)."""

    def __init__(self, obj: Any, allowed: tuple[str, ...], stage: str, path: str = "") -> None:
        self._obj, self._allowed, self._stage, self._path = obj, allowed, stage, path

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        key = f"{self._path}.{name}" if self._path else name
        value = getattr(self._obj, name)
        if any(key == a or key.startswith(a + ".") for a in self._allowed):
            return value
        if any(a.startswith(key + ".") for a in self._allowed):
            return ParamsView(value, self._allowed, self._stage, key)
        raise UndeclaredParam(f"stage {self._stage} reads params key {key!r}, which its entry in the stage "
                              "registry (vertical_dag/stages/__init__.py) does not declare")


def declared_keys(spec: Stage) -> tuple[str, ...]:
    keys = (*spec.params, *spec.path_params, *spec.gate_params, "gates.enabled")
    if spec.plugins:
        keys += ("project.plugins",)
    return keys


@dataclass(frozen=True)
class StageContext:
    project: Project
    params: Any  # a ParamsView of Params
    spec: Stage
    log: logging.Logger
    full_params: Params = field(repr=False, default=None)  # type: ignore[assignment]

    @property
    def out(self) -> Path:
        return self.project.root / self.spec.out

    @property
    def ledger_dir(self) -> Path:
        return self.out / "ledger"

    def input(self, name: str) -> Path:
        """The main output of an upstream stage this one declares it reads."""
        if name not in self.spec.reads:
            raise KeyError(f"stage {self.spec.name} does not declare that it reads {name!r} (stage registry)")
        return self.project.root / STAGES[name].out


class GateFailed(RuntimeError):
    """A quality gate failed: the stage's outputs must not be recorded as good."""


def stage_logger(name: str) -> logging.Logger:
    log = logging.getLogger(f"vertical_dag.{name}")
    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return log


def make_context(name: str, project: Project, params: Params | None = None) -> StageContext:
    spec = STAGES[name]
    params = params or load_params(project.params_file)
    return StageContext(project=project, params=ParamsView(params, declared_keys(spec), name), spec=spec,
                        log=stage_logger(name), full_params=params)


def run_stage(name: str, project: Project, *, gate: bool = True) -> dict[str, Any]:
    """Validate params, run one stage, write its metrics, then run its quality gate.

    Params (and the paths they name) are checked before any output is touched; the stage holds a lock for
    the whole run, so a second run of the same stage stops at once and changes nothing."""
    from ..params import check_paths

    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    params = load_params(project.params_file)  # raises ParamsError before any output is touched
    check_paths(params, project.root, STAGES[name].path_params)
    ctx = make_context(name, project, params)
    with stage_lock(project, name), ExitStack() as stack:
        from ..quality.suites import checks_for

        gate_process = None
        if gate and params.gates.enabled and checks_for(name, params):
            from ..quality.gate_process import GateProcess

            gate_process = GateProcess(name, project, params)  # imports GE and reads parts while the stage works
            stack.callback(gate_process.close)
        remove_temporaries(ctx.out)  # a killed run's half-written files (the lock: nobody else is writing)
        module = importlib.import_module(f"vertical_dag.stages.{name}")
        started = time.perf_counter()
        metrics = module.run(ctx)
        metrics.setdefault("seconds", round(time.perf_counter() - started, 3))
        write_stage_metrics(project, ctx.spec, metrics)
        report_stage(name, metrics)  # to the Dagster run that launched this one through `dvc repro`, if any
        ctx.log.info("%s done in %.1f s; metrics in %s", name, metrics["seconds"], ctx.spec.metrics_file)
        from ..quality import gate as quality_gate

        if not params.gates.enabled:
            result = quality_gate.skip_gate(ctx, "gates.enabled is false in params.yaml")
        elif not gate:
            result = quality_gate.skip_gate(ctx, "run with --no-gate")
        else:
            result = quality_gate.run_gate(ctx, metrics, gate_process.validate if gate_process else None)
        after = getattr(module, "after_gate", None)
        if after is not None:  # e.g. a report or model card that shows the gate's verdict
            after(ctx, metrics, result)
        if not result.success:
            raise GateFailed(result.failure_message())
    return metrics
