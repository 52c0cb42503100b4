"""The `inputs` stage: what each stage depends on besides upstream data, as one small file per stage.

DVC tracks files named in dvc.yaml, but a stage also depends on its code and on files the user names in
params.yaml (a base model folder, a general corpus, instruction and evaluation files; anywhere on disk, or a
hub id). dvc.yaml is generated once from the stage registry and must not change when a path in params does,
so this stage (`always_changed` in dvc.yaml: it runs first on every `dvc repro`, in about a second) writes
data/inputs/<stage>.json: the sha256 of every module the stage imports (found from the source, so nothing is
declared by hand) and of every file behind its path params. DVC re-runs a stage exactly when its file
changes; an unchanged one is skipped as usual.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..params import Params, glob_files, is_hub_id, load_params
from ..project import Project
from ..records import file_fingerprint, read_json, write_json
from . import STAGES, Stage

PACKAGE = Path(__file__).resolve().parents[1]  # vertical_dag/
CACHE = "data/cache/input_fingerprints.json"  # size + mtime -> sha256, so unchanged files are not re-read


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "vertical_dag":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(name: str, path: Path) -> set[str]:
    """Modules of the package that `name` imports, anywhere in its source (lazy imports in functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("vertical_dag")}


def code_closure(module: str) -> dict[str, Path]:
    """Every module of the package reachable from `module` by imports, with its file."""
    todo, seen = [module], {}
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        parent = name.rpartition(".")[0]
        if parent and parent not in seen:
            todo.append(parent)  # importing a.b runs a/__init__.py
        todo.extend(_imports(name, path) - seen.keys())
    return dict(sorted(seen.items()))


def _source_sha(path: Path) -> str:
    """A module's sha256, read once per process and version of the file: every stage's closure shares most
    of the package."""
    st = path.stat()
    return _sha_of(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=512)
def _sha_of(path: Path, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sha(path: Path, cache: dict[str, Any]) -> str:
    key = str(path.resolve())
    fp = file_fingerprint(path, cache.get(key))
    cache[key] = fp
    return fp["sha256"]


def path_fingerprint(value: Any, root: Path, cache: dict[str, Any]) -> Any:
    """A path param's value -> what it points to: file hashes, a hub id, or null."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, list):
        return {pattern: {str(p): _sha(p, cache) for p in glob_files(root, pattern)} for pattern in value}
    path = Path(value) if Path(value).is_absolute() else root / value
    if path.is_file():
        return {"file": str(value), "sha256": _sha(path, cache)}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        return {"folder": str(value), "files": {str(p.relative_to(path)): _sha(p, cache) for p in files}}
    return {"hub_id": value} if is_hub_id(value) else {"missing": str(value)}


def _plugin_files(names: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for name in (n.partition(":")[0] for n in names):  # "module" or "module:attribute"
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin) if spec and spec.origin else None
        if origin is None:
            continue
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        out.update({f"{name}:{f.name}": f for f in files})
    return out


def stage_inputs(spec: Stage, params: Params, root: Path, cache: dict[str, Any]) -> dict[str, Any]:
    code = code_closure(f"vertical_dag.stages.{spec.name}")
    if spec.plugins:
        code.update(_plugin_files(list(params.project.plugins)))
    values = params.model_dump()
    paths = {}
    for key in spec.path_params:
        value: Any = values
        for part in key.split("."):
            value = value[part]
        paths[key] = path_fingerprint(value, root, cache)
    return {"code": {name: _source_sha(path) for name, path in code.items()}, "paths": paths}


def write_inputs(project: Project) -> dict[str, Any]:
    """Write data/inputs/<stage>.json for every stage (unchanged content leaves the file as it was)."""
    import sys

    if str(project.root) not in sys.path:  # a vertical's plugins may be modules in the project folder
        sys.path.insert(0, str(project.root))
    params = load_params(project.params_file)
    cache_file = project.root / CACHE
    cache = read_json(cache_file, {}) or {}
    written = {}
    for spec in STAGES.values():
        data = stage_inputs(spec, params, project.root, cache)
        target = project.root / spec.inputs_file
        if read_json(target) != data:
            write_json(data, target)
        written[spec.name] = data
    write_json(cache, cache_file)
    from ..dvcyaml import is_current

    if not is_current(project.root / "dvc.yaml", params.normalize.pii.push_unredacted):
        import logging

        logging.getLogger("vertical_dag.inputs").warning(
            "dvc.yaml differs from what the stage registry and params give: run `vertical-dag dvc-yaml`")
    return written


def code_digest(stage: str) -> str:
    """One hash of the code a stage runs: part stages keep it with their incremental state, so new code
    redoes the parts old code made (DVC re-runs the stage; this makes the stage redo its work)."""
    code = code_closure(f"vertical_dag.stages.{stage}")
    return hashlib.sha256("".join(_source_sha(p) for p in code.values()).encode()).hexdigest()[:16]
