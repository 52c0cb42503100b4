"""The DVC adapter: dvc.yaml generated from the stage registry (`vertical-dag dvc-yaml [--check]`).

One stage per pipeline stage, `cmd: vertical-dag run <stage>`. Deps are the outputs of the stages it reads
(the registry's lineage) and its data/inputs/<stage>.json (code and user-named paths, see stages/inputs.py);
params are its sections and the gates.* bounds its gate reads, so changing a bound re-runs that gate alone.
Gate, metrics and perf files are `persist: true`: DVC would otherwise delete them before running the command,
and a run stopped by bad params would leave no trace of the last good one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .stages import INPUTS, RAW, STAGES, Stage
from .stages.context import declared_keys
from .stages.metrics import drops_plot_file, perf_file

HEADER = """\
# Generated from the stage registry (vertical_dag/stages/__init__.py) by `vertical-dag dvc-yaml`; do not edit
# by hand (`vertical-dag dvc-yaml --check` fails when this file and the registry disagree).
# Data outputs are `persist: true`: stages are incremental and keep their state between runs.
"""
_SMALL = {"cache": False, "persist": True}


def _params(spec: Stage) -> list[str]:
    keys = list(dict.fromkeys(declared_keys(spec)))
    # a key inside a declared section is already covered by it
    return [k for k in keys if not any(k != s and k.startswith(s + ".") for s in keys)]


def stage_entry(spec: Stage, push_unredacted: bool = False) -> dict[str, Any]:
    deps = ([RAW] if spec.raw else []) + [STAGES[r].out for r in spec.reads] + [spec.inputs_file]
    main: dict[str, Any] = {"persist": True}
    if not spec.push and not push_unredacted:
        main["push"] = False
    outs: list[Any] = [{spec.out: main}, {spec.gate_file: dict(_SMALL)}, {perf_file(spec.name): dict(_SMALL)}]
    outs += [{r: dict(_SMALL)} for r in spec.reports]
    entry: dict[str, Any] = {"cmd": f"vertical-dag run {spec.name}", "deps": deps, "params": _params(spec),
                             "outs": outs,
                             "metrics": [{m: dict(_SMALL)} for m in (spec.metrics_file, *spec.metrics)]}
    plots = [{p.path: {**_SMALL, "x": p.x, "y": p.y, **({"template": p.template} if p.template else {})}}
             for p in spec.plots]
    if not spec.training:
        plots.append({drops_plot_file(spec.name): {**_SMALL, "template": "bar_horizontal", "x": "documents",
                                                   "y": "reason"}})
    if plots:
        entry["plots"] = plots
    return entry


def pipeline(push_unredacted: bool = False) -> dict[str, Any]:
    inputs = {"cmd": "vertical-dag inputs", "always_changed": True,
              "outs": [{s.inputs_file: dict(_SMALL)} for s in STAGES.values()]}
    stages = {name: stage_entry(spec, push_unredacted) for name, spec in STAGES.items()}
    return {"stages": {INPUTS: inputs, **stages}}


def render(push_unredacted: bool = False) -> str:
    """dvc.yaml's text; push_unredacted is normalize.pii.push_unredacted (DVC cannot read it from params)."""
    return HEADER + yaml.safe_dump(pipeline(push_unredacted), sort_keys=False, allow_unicode=True, width=110)


def write(path: Path, push_unredacted: bool = False) -> bool:
    """Write dvc.yaml; True when it changed."""
    text = render(push_unredacted)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def is_current(path: Path, push_unredacted: bool = False) -> bool:
    return path.is_file() and path.read_text(encoding="utf-8") == render(push_unredacted)
