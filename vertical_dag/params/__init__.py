"""Typed view of params.yaml: one pydantic section per stage, unknown keys rejected.

A bad params file stops every command with exit code 2 and one line naming the key, the value and what
was expected, before any output is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .base import ParamsError, Section
from .data import (
    DecontaminateParams,
    DedupParams,
    ExecutionParams,
    IngestParams,
    NormalizeParams,
    PiiParams,
    PiiType,
    ProjectParams,
    QualityFilterParams,
    SourceFormat,
    SourceParams,
    SplitFractions,
    SplitParams,
)
from .models import (
    BaseModelParams,
    Device,
    EvaluateParams,
    ExportParams,
    FinetuneParams,
    GenerationParams,
    PretrainParams,
    ServeParams,
)


class GatesParams(Section):
    """Bounds of the quality gates (Great Expectations suites, one per stage; see vertical_dag/quality)."""

    enabled: bool = True
    min_documents: int = Field(1, ge=0)  # every data stage keeps at least this many documents
    max_quarantine_rate: float = Field(0.05, ge=0, le=1)  # ingest: quarantined / records read
    min_duplicate_rate: float = Field(0.0, ge=0, le=1)  # dedup: dropped / documents in
    max_duplicate_rate: float = Field(0.9, ge=0, le=1)
    min_doc_chars: int = Field(1, ge=0)  # normalize: shortest kept document (the longest is ingest.max_doc_chars)
    split_fraction_tolerance: float = Field(0.05, ge=0, le=1)
    split_fraction_sigmas: float = Field(3.0, ge=0)  # allow this many binomial std errors on small corpora
    max_contamination: float = Field(0.5, ge=0, le=1)  # split: max share of a validation/test doc's n-grams in train
    min_perplexity_gain: float = 0.0  # pretrain: base - final validation perplexity must exceed this
    min_domain_bpc_gain: float = 0.0  # evaluate: base - pretrained domain bits/char must exceed this
    max_general_bpc_increase: float = Field(0.1, ge=0)  # evaluate: forgetting bound on general text
    min_task_accuracy_gain: float = 0.0  # evaluate: finetuned - base task accuracy must exceed this

    @model_validator(mode="after")
    def _bounds(self) -> GatesParams:
        if self.min_duplicate_rate > self.max_duplicate_rate:
            raise ValueError(f"min_duplicate_rate ({self.min_duplicate_rate}) must not exceed max_duplicate_rate ({self.max_duplicate_rate})")
        return self


class AutomationParams(Section):
    """Dagster schedule / sensor settings (all of them stopped until switched on in the UI or CLI)."""

    schedule_cron: str = "0 2 * * *"  # rebuild-what-is-stale schedule: nightly
    training_cron: str = "0 3 * * 0"  # training assets' automation condition: weekly, not on every new file
    observe_cron: str = "*/5 * * * *"  # how often automation observes data/raw/ for new files
    sensor_interval_seconds: int = Field(60, ge=5)  # raw-files sensor and automation sensor polling interval

    @field_validator("schedule_cron", "training_cron", "observe_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        fields = v.split()
        allowed = set("0123456789*/,-?") | set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        if len(fields) != 5 or not all(set(f) <= allowed for f in fields):
            raise ValueError("must be a cron expression of 5 fields, e.g. '0 2 * * *'")
        return v


class Params(Section):
    project: ProjectParams = ProjectParams()
    execution: ExecutionParams = ExecutionParams()
    ingest: IngestParams = IngestParams()
    dedup: DedupParams = DedupParams()
    normalize: NormalizeParams = NormalizeParams()
    split: SplitParams = SplitParams()
    base_model: BaseModelParams = BaseModelParams()
    pretrain: PretrainParams = PretrainParams()
    finetune: FinetuneParams = FinetuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    serve: ServeParams = ServeParams()
    gates: GatesParams = GatesParams()
    automation: AutomationParams = AutomationParams()


def _expected(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "no such key (check the spelling; see params.yaml in `vertical-dag init` for every key)"
    if err["type"] == "literal_error":
        return err["msg"].replace("Input should be", "one of")
    return err["msg"].replace("Input should be", "expected").replace("Value error, ", "")


def format_validation_error(exc: ValidationError, file: str = "params.yaml") -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    value = err.get("input")
    shown = "(missing)" if err["type"] == "missing" else repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{file}: {key} = {shown}: {_expected(err)}{more}"


def check_tasks(params: Params, file: str = "params.yaml", root: Path | None = None) -> None:
    """The plugins import, and every finetune.task_weights name is a built-in or plugin task."""
    from ..plugins import (  # stdlib + the plugins' own imports: no torch here
        PluginError,
        load_registry,
    )

    specs = params.project.plugins
    try:
        registry = load_registry(specs, root)
    except PluginError as exc:
        raise ParamsError(f"{file}: project.plugins.{specs.index(exc.spec)} = {exc.spec!r}: {exc}") from None
    known = registry.task_names
    for name, weight in params.finetune.task_weights.items():
        if name not in known:
            raise ParamsError(f"{file}: finetune.task_weights.{name} = {weight!r}: unknown task; known: {', '.join(known)}"
                              " (a vertical's own tasks come from project.plugins)")


def parse_params(data: Any, file: str = "params.yaml", root: Path | None = None) -> Params:
    """Typed params; root (the project folder) is where project.plugins are looked for first."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{file}: top level must be a mapping of stage sections, got {type(data).__name__}")
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(format_validation_error(exc, file)) from None
    check_tasks(params, file, root)
    return params


def load_params(path: Path | str) -> Params:
    path = Path(path)
    if path.is_dir():
        path = path / "params.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_params(data, file=path.name, root=path.parent)


# ---------------------------------------------------------------- paths named in params


def is_hub_id(value: str) -> bool:
    """'org/name' or 'name' that is not a local path: a model hub id (usable only online)."""
    return not value.startswith((".", "/", "~")) and value.count("/") <= 1 and not Path(value).suffix


def glob_files(root: Path, pattern: str) -> list[Path]:
    """Files matching a params glob (relative to the project root, or absolute), in name order."""
    import glob

    base = pattern if Path(pattern).is_absolute() else str(root / pattern)
    return sorted(Path(p) for p in glob.glob(base, recursive=True) if Path(p).is_file())


def _value(params: Params, key: str) -> Any:
    value: Any = params
    for part in key.split("."):
        value = getattr(value, part)
    return value


def check_paths(params: Params, root: Path, keys: tuple[str, ...] | list[str]) -> None:
    """Every path a stage's params name must exist (null / [] means not used); ParamsError naming the key.

    A glob must match at least one file; a model source may also be a hub id (checked when importing)."""
    for key in keys:
        value = _value(params, key)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item is None or item == "":
                continue
            if isinstance(value, list):
                if not glob_files(root, item):
                    raise ParamsError(f"params.yaml: {key} = {item!r}: no file matches (relative to {root})")
                continue
            path = Path(item) if Path(item).is_absolute() else root / item
            if not path.exists() and not (key == "base_model.source" and is_hub_id(item)):
                raise ParamsError(f"params.yaml: {key} = {item!r}: no such file or folder ({path})")


__all__ = [
    "BaseModelParams", "DecontaminateParams", "DedupParams", "Device", "EvaluateParams", "ExecutionParams",
    "ExportParams", "FinetuneParams", "GatesParams", "GenerationParams", "IngestParams", "NormalizeParams",
    "Params", "ParamsError", "PiiParams", "PiiType", "PretrainParams", "ProjectParams", "QualityFilterParams",
    "Section", "ServeParams", "SourceFormat", "SourceParams", "SplitFractions", "SplitParams", "check_paths",
    "glob_files", "is_hub_id", "load_params", "parse_params",
]
