"""The pipeline as Dagster sees it: one node per registry stage, plus what dvc.yaml / dvc.lock recorded.

Nothing here imports Dagster. Lineage comes from the stage registry (vertical_dag/stages/__init__.py), the
same table dvc.yaml is generated from. A registry stage missing from the project's dvc.yaml (an older
project) is shown but not materializable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash
import yaml

from ..dvc_cli import out_hashes
from ..project import Project
from ..stages import STAGES
from ..stages.context import declared_keys

RAW_ASSET = "raw_sources"


@dataclass(frozen=True)
class StageNode:
    name: str  # DVC stage name
    asset: str  # Dagster asset key
    out: str  # main output folder, relative to the project root
    deps: tuple[str, ...]  # upstream asset keys
    runnable: bool  # present in dvc.yaml
    code_version: str | None
    description: str
    is_training: bool
    plots: tuple[str, ...] = ()  # DVC plots files of the stage (loss curves, drops by reason, ...)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _paths(entries: list[Any] | None) -> list[str]:
    """dvc.yaml deps/outs entries are either 'path' or {'path': {options}}."""
    out = []
    for e in entries or []:
        out.extend([e] if isinstance(e, str) else list(e))
    return [p.rstrip("/") for p in out]


def code_version(project: Project, name: str, params: dict[str, Any], cache: dict[str, Any]) -> str:
    """What DVC looks at besides upstream data: the stage's inputs (its code, the files its params name;
    stages/inputs.py) and the values of its declared params. Changes exactly when DVC would re-run the
    stage for that reason, whether or not the inputs stage has run yet."""
    from ..params import ParamsError, parse_params
    from ..stages.inputs import stage_inputs

    h = xxhash.xxh64()
    spec = STAGES[name]
    try:
        inputs = stage_inputs(spec, parse_params(params), project.root, cache)
    except ParamsError as exc:  # the UI still loads; the stage itself will say what is wrong
        inputs = {"invalid params": str(exc)}
    h.update(json.dumps(inputs, sort_keys=True, default=str).encode())
    for key in declared_keys(spec):
        value: Any = params
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        h.update(json.dumps({key: value}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def load_pipeline(project: Project) -> list[StageNode]:
    """Registry stages in lineage order."""
    from ..records import read_json
    from ..stages.inputs import CACHE

    dvc_stages: dict[str, dict[str, Any]] = read_yaml(project.root / "dvc.yaml").get("stages") or {}
    params = read_yaml(project.params_file)
    cache = read_json(project.root / CACHE, {}) or {}  # file hashes by size + mtime, shared with `inputs`
    nodes = []
    for name, spec in STAGES.items():
        deps = ((RAW_ASSET,) if spec.raw else ()) + tuple(STAGES[r].asset for r in spec.reads)
        runnable = name in dvc_stages
        text = (f"{spec.description}. DVC stage `{name}` (`vertical-dag run {name}`) -> `{spec.out}`."
                if runnable else f"{spec.description}. Stage `{name}` -> `{spec.out}` (not in dvc.yaml: "
                "run `vertical-dag dvc-yaml` to add it).")
        nodes.append(StageNode(name, spec.asset, spec.out, deps, runnable,
                               code_version(project, name, params, cache) if runnable else None, text, spec.training,
                               tuple(_paths(dvc_stages.get(name, {}).get("plots")))))
    return nodes


def locked_outs(project: Project, stage: str) -> dict[str, str]:
    """{out path: content hash} DVC recorded for a stage (empty when it never ran), from `dvc ls --json`."""
    spec = (read_yaml(project.root / "dvc.yaml").get("stages") or {}).get(stage) or {}
    outs = _paths(spec.get("outs"))
    return out_hashes(project.root, outs) if outs and (project.root / "dvc.lock").is_file() else {}


def output_hash(project: Project, node: StageNode) -> str | None:
    """The main output's content hash from dvc.lock: the asset's data version."""
    outs = locked_outs(project, node.name)
    if node.out in outs:
        return outs[node.out] or None
    if not outs:
        return None
    return xxhash.xxh64("".join(f"{k}={v}" for k, v in sorted(outs.items())).encode()).hexdigest()
