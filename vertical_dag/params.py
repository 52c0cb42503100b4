"""Typed view of params.yaml: one pydantic section per stage, unknown keys rejected.

A bad params file stops every command with exit code 2 and one line naming the key, the value and what
was expected, before any output is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ParamsError(ValueError):
    """Raised for an unreadable or invalid params.yaml; str() is a single line for the user."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- project


class ProjectParams(Section):
    name: str = "vertical"
    domain: Literal["legal", "medical", "finance", "technical", "general"] = "general"
    seed: int = 1234


# ---------------------------------------------------------------- ingest


SourceFormat = Literal["auto", "jsonl", "parquet", "csv", "text", "markdown", "html", "sqlite"]


class SourceParams(Section):
    """How to read one folder under data/raw/. Every folder there is a source even when not listed."""

    name: str
    format: SourceFormat = "auto"
    text_field: str = "text"
    id_field: str | None = "id"
    meta_fields: list[str] | None = None  # None: every other field goes to meta
    query: str | None = None  # sqlite: a SELECT returning the text column (and id / meta columns)
    csv_delimiter: str = ","

    @field_validator("query")
    @classmethod
    def _select_only(cls, v: str | None) -> str | None:
        if v is not None and not v.lstrip().lower().startswith(("select", "with")):
            raise ValueError("must be a read-only SELECT (or WITH ... SELECT) statement")
        return v


class IngestParams(Section):
    sources: list[SourceParams] = Field(default_factory=list)
    min_doc_chars: int = Field(1, ge=0)
    max_doc_chars: int = Field(2_000_000, gt=0)
    max_file_mb: float = Field(2048, gt=0)
    encodings: list[str] = Field(default_factory=lambda: ["utf-8", "gb18030", "utf-16", "big5"])

    @model_validator(mode="after")
    def _bounds(self) -> IngestParams:
        if self.min_doc_chars >= self.max_doc_chars:
            raise ValueError(f"min_doc_chars ({self.min_doc_chars}) must be below max_doc_chars ({self.max_doc_chars})")
        return self

    def source(self, name: str) -> SourceParams:
        for s in self.sources:
            if s.name == name:
                return s
        return SourceParams(name=name)


# ---------------------------------------------------------------- later stages (filled in by their issues)


class DedupParams(Section):
    enabled: bool = True


class NormalizeParams(Section):
    enabled: bool = True


class SplitParams(Section):
    enabled: bool = True


class BaseModelParams(Section):
    enabled: bool = True


class PretrainParams(Section):
    enabled: bool = True


class FinetuneParams(Section):
    enabled: bool = True


class EvaluateParams(Section):
    enabled: bool = True


class GatesParams(Section):
    enabled: bool = True


class AutomationParams(Section):
    """Dagster schedule / sensor settings."""

    schedule_cron: str = "0 2 * * *"
    training_cron: str = "0 3 * * 0"
    sensor_interval_seconds: int = Field(60, ge=5)


class Params(Section):
    project: ProjectParams = ProjectParams()
    ingest: IngestParams = IngestParams()
    dedup: DedupParams = DedupParams()
    normalize: NormalizeParams = NormalizeParams()
    split: SplitParams = SplitParams()
    base_model: BaseModelParams = BaseModelParams()
    pretrain: PretrainParams = PretrainParams()
    finetune: FinetuneParams = FinetuneParams()
    evaluate: EvaluateParams = EvaluateParams()
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


def parse_params(data: Any, file: str = "params.yaml") -> Params:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{file}: top level must be a mapping of stage sections, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(format_validation_error(exc, file)) from None


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
    return parse_params(data, file=path.name)
