"""The pipeline as Dagster sees it: one node per stage, read from the stage registry, dvc.yaml and dvc.lock.

Nothing here imports Dagster. A stage present in dvc.yaml is *runnable* (its asset runs `dvc repro` on it);
a registry stage not yet in dvc.yaml is only *declared*, so the lineage graph is whole either way. A stage
in dvc.yaml that the registry does not know becomes an asset named after the stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash
import yaml

from ..project import Project
from ..stages import STAGES

RAW_ASSET = "raw_sources"
TRAINING_STAGES = ("base_model", "pretrain", "finetune", "evaluate", "export")

# Lineage for stages not (yet) in dvc.yaml, by stage name; "raw" is the observable source.
DEFAULT_DEPS: dict[str, tuple[str, ...]] = {
    "ingest": ("raw",),
    "dedup": ("ingest",),
    "normalize": ("dedup",),
    "split": ("normalize",),
    "base_model": (),
    "pretrain": ("split", "base_model"),
    "finetune": ("pretrain", "split"),
    "evaluate": ("base_model", "pretrain", "finetune", "split"),
}


@dataclass(frozen=True)
class StageNode:
    name: str  # DVC stage name
    asset: str  # Dagster asset key
    out: str  # main output folder, relative to the project root
    deps: tuple[str, ...]  # upstream asset keys
    runnable: bool  # present in dvc.yaml
    code_version: str | None
    description: str
    plots: tuple[str, ...] = ()  # DVC plots files of the stage (loss curves, ...)

    @property
    def is_training(self) -> bool:
        return self.name in TRAINING_STAGES


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


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


def _hash_path(h: xxhash.xxh64, path: Path) -> None:
    files = (
        sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        if path.is_dir()
        else [path]
    )
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        if not f.exists():
            h.update(b"(missing)")
        elif f.stat().st_size > 4 << 20:  # a model file: size + mtime, not a full read on every load
            h.update(f"{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
        else:
            h.update(f.read_bytes())


def code_version(project: Project, stage: dict[str, Any], params: dict[str, Any]) -> str:
    """What DVC looks at besides data: the command, the stage's params sections and its code deps.

    Changes exactly when DVC would call the stage changed for a reason other than new data.
    """
    h = xxhash.xxh64()
    h.update(str(stage.get("cmd", "")).encode())
    for entry in stage.get("params") or []:
        keys = [entry] if isinstance(entry, str) else [k for v in entry.values() for k in (v or [])]
        for key in keys:
            h.update(json.dumps({key: params.get(key)}, sort_keys=True, default=str).encode())
    for dep in _paths(stage.get("deps")):
        if not dep.startswith("data/"):  # code (and model files outside data/) are part of the version
            _hash_path(h, project.root / dep)
    return h.hexdigest()


def load_pipeline(project: Project) -> list[StageNode]:
    """Registry stages in lineage order, then any extra stages dvc.yaml declares."""
    dvc_stages: dict[str, dict[str, Any]] = read_yaml(project.root / "dvc.yaml").get("stages") or {}
    params = read_yaml(project.params_file)
    outs = {name: _paths(s.get("outs")) for name, s in dvc_stages.items()}
    for name, spec in STAGES.items():  # a registry stage's folder is known even before dvc.yaml has it
        outs.setdefault(name, [spec.out])
    asset_of = {name: spec.asset for name, spec in STAGES.items()} | {
        n: n for n in dvc_stages if n not in STAGES
    }
    asset_of["raw"] = RAW_ASSET

    def deps_from_dvc(name: str) -> tuple[str, ...]:
        found: list[str] = []
        for dep in _paths(dvc_stages[name].get("deps")):
            if _under(dep, "data/raw"):
                found.append(RAW_ASSET)
            for other, other_outs in outs.items():
                if other != name and any(_under(dep, o) for o in other_outs):
                    found.append(asset_of[other])
        return tuple(dict.fromkeys(found))

    nodes = []
    for name in [*STAGES, *(n for n in dvc_stages if n not in STAGES)]:
        spec = STAGES.get(name)
        out = spec.out if spec else (outs.get(name) or [f"data/{name}"])[0]
        if name in dvc_stages:
            stage = dvc_stages[name]
            deps = deps_from_dvc(name)
            if not deps and name in DEFAULT_DEPS:  # e.g. a model stage reading only code/params
                deps = tuple(asset_of[d] for d in DEFAULT_DEPS[name])
            text = f"DVC stage `{name}`: `{stage.get('cmd', '')}` -> `{out}`."
            version = code_version(project, stage, params)
        else:
            deps = tuple(asset_of[d] for d in DEFAULT_DEPS.get(name, ()))
            text = f"Stage `{name}` -> `{out}` (declared; not in dvc.yaml yet, so it cannot be materialized)."
            version = None
        plots = tuple(_paths(dvc_stages.get(name, {}).get("plots")))
        nodes.append(StageNode(name, asset_of[name], out, deps, name in dvc_stages, version, text, plots))
    return nodes


def locked_outs(project: Project, stage: str) -> dict[str, str]:
    """{out path: content hash} recorded for a stage in dvc.lock (empty when it never ran)."""
    lock = read_yaml(project.root / "dvc.lock").get("stages") or {}
    return {
        o["path"].rstrip("/"): str(o.get("md5") or o.get("etag") or "")
        for o in (lock.get(stage) or {}).get("outs", [])
    }


def output_hash(project: Project, node: StageNode) -> str | None:
    """The main output's content hash from dvc.lock: the asset's data version."""
    outs = locked_outs(project, node.name)
    if node.out in outs:
        return outs[node.out] or None
    if not outs:
        return None
    return xxhash.xxh64("".join(f"{k}={v}" for k, v in sorted(outs.items())).encode()).hexdigest()
