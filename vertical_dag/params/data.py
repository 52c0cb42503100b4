"""The data stages' params: project, execution, ingest, dedup, normalize, split."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Section

# ---------------------------------------------------------------- project


class ProjectParams(Section):
    name: str = "vertical"
    domain: Literal["legal", "medical", "finance", "technical", "general"] = "general"
    seed: int = 1234
    # Modules (dotted paths, `module` or `module:attribute`) exposing a vertical_dag.plugins.VerticalPlugin:
    # a vertical's own task generators, general-text readers and sample prompts. The project folder is on
    # sys.path, so a module there needs no installing.
    plugins: list[str] = Field(default_factory=list)

    @field_validator("plugins")
    @classmethod
    def _dotted(cls, v: list[str]) -> list[str]:
        import re

        for spec in v:
            if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?", spec):
                raise ValueError(f"{spec!r} is not a dotted module path (e.g. my_vertical or my_pkg.plugin:PLUGIN)")
        return v


class ExecutionParams(Section):
    """Where the data stages' per-part work runs. Results are identical whatever the choice."""

    backend: Literal["local", "ray"] = "local"
    workers: int | Literal["auto"] = "auto"  # local: processes (auto: every core); 1 runs in-process
    ray_address: str | None = None  # ray: a cluster address, "auto" for a running one, null: a local one

    @field_validator("workers")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be 'auto' or a whole number >= 1")
        return v


# ---------------------------------------------------------------- ingest


SourceFormat = Literal["auto", "jsonl", "parquet", "csv", "text", "markdown", "html", "sqlite", "pdf", "docx", "xlsx",
                       "warc", "zip", "tar", "compressed"]


class SourceParams(Section):
    """How to read one folder under data/raw/. Every folder there is a source even when not listed."""

    name: str
    format: SourceFormat = "auto"
    text_field: str = "text"
    id_field: str | None = "id"
    meta_fields: list[str] | None = None  # None: every other field goes to meta
    query: str | None = None  # sqlite: a SELECT returning the text column (and id / meta columns)
    csv_delimiter: str = ","
    pdf_unit: Literal["file", "page"] = "file"  # one document per PDF, or one per page
    sheet_unit: Literal["row", "sheet"] = "row"  # xlsx: one document per row (header row first), or per sheet
    text_columns: list[str] | None = None  # xlsx rows: columns joined into the text (null: text_field alone)

    @field_validator("text_columns")
    @classmethod
    def _some_columns(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("must name at least one column (or be null to use text_field)")
        return v

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
    encodings: list[str] = Field(default_factory=lambda: ["utf-8", "gb18030", "utf-16", "big5"], min_length=1)
    # Archives and compressed files: limits against archive bombs, counted while decompressing.
    archive_max_members: int = Field(10_000, ge=1)
    archive_max_mb: float = Field(4096, gt=0)  # what one raw file may expand to, all members together
    archive_max_ratio: float = Field(200, gt=1)  # expanded / compressed size of a member
    # A raw file that is a symlink to something outside the project is refused (a ledger row) unless this is
    # true; a followed link's target is recorded in the documents' meta (resolved_path).
    follow_external_symlinks: bool = False

    @field_validator("encodings")
    @classmethod
    def _known_encodings(cls, v: list[str]) -> list[str]:
        import codecs

        for name in v:
            try:
                info = codecs.lookup(name)
            except LookupError:
                raise ValueError(f"unknown text encoding {name!r} (Python codec names, e.g. utf-8, gb18030, big5)") from None
            if not getattr(info, "_is_text_encoding", True):
                raise ValueError(f"{name!r} is not a text encoding")
        return v

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


# ---------------------------------------------------------------- dedup, normalize, split


class DedupParams(Section):
    """Exact (canonical form) and near-duplicate (MinHash + LSH) removal; see vertical_dag/text/dedup_index.py."""

    enabled: bool = True  # false: every document is kept (nothing is indexed)
    exact: bool = True
    near: bool = True
    ngram_cjk: int = Field(5, ge=1, le=32)  # character n-grams over CJK text
    # space-separated scripts: character n-grams (robust to OCR-like character edits) or word n-grams
    spaced_shingles: Literal["chars", "words"] = "words"
    ngram_chars: int = Field(5, ge=1, le=32)  # character n-grams over space-separated scripts (chars)
    ngram_words: int = Field(3, ge=1, le=16)  # word n-grams over space-separated scripts (words)
    num_perm: int = Field(128, ge=8, le=1024)
    threshold: float = Field(0.7, gt=0, lt=1)  # target Jaccard similarity
    bands: int | None = Field(None, ge=1)  # null: derived from threshold and num_perm (bands * rows <= num_perm)
    rows: int | None = Field(None, ge=1)
    verify: bool = True  # exact Jaccard of candidate pairs instead of the MinHash estimate
    max_candidates: int = Field(32, ge=1, le=10_000)  # earliest documents checked per shared band
    # template families (kept whole in one split): documents whose MinHash estimate reaches this, looser than
    # threshold; 0 turns families off (every document its own family)
    family_threshold: float = Field(0.3, ge=0, lt=1)
    batch_size: int = Field(10_000, ge=1, le=1_000_000)  # documents in memory at once
    seed: int = 1

    @model_validator(mode="after")
    def _bands_rows(self) -> DedupParams:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither (then they are derived from threshold)")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows ({self.bands} * {self.rows}) must not exceed num_perm ({self.num_perm})")
        return self


class QualityFilterParams(Section):
    """Quality thresholds; a key left null takes the value of the preset (see vertical_dag/text/quality.py)."""

    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, gt=0)
    max_digit_ratio: float | None = Field(None, ge=0, le=1)
    max_symbol_ratio: float | None = Field(None, ge=0, le=1)
    max_dup_line_frac: float | None = Field(None, ge=0, le=1)
    max_dup_line_char_frac: float | None = Field(None, ge=0, le=1)
    dup_ngram_n_words: int | None = Field(None, ge=2, le=50)
    max_dup_ngram_frac_words: float | None = Field(None, ge=0, le=1)
    dup_ngram_n_chars: int | None = Field(None, ge=2, le=100)
    max_dup_ngram_frac_chars: float | None = Field(None, ge=0, le=1)
    top_ngram_n_words: int | None = Field(None, ge=1, le=20)
    max_top_ngram_frac_words: float | None = Field(None, ge=0, le=1)
    top_ngram_n_chars: int | None = Field(None, ge=1, le=50)
    max_top_ngram_frac_chars: float | None = Field(None, ge=0, le=1)
    repetition_min_tokens: int | None = Field(None, ge=0)
    ignore_numbering: bool | None = None
    cjk_threshold: float | None = Field(None, ge=0, le=1)


PiiType = Literal["EMAIL", "ID_CARD", "BANK_CARD", "IP", "PHONE"]


class PiiParams(Section):
    enabled: bool = True
    types: list[PiiType] = Field(default_factory=lambda: ["EMAIL", "ID_CARD", "BANK_CARD", "IP", "PHONE"])
    # NAME -> regex; matches become <NAME>. NAME: capital letters, digits, underscore.
    extra_patterns: dict[str, str] = Field(default_factory=dict)
    max_pii_char_frac: float = Field(0.8, gt=0, le=1)  # above this share of redacted characters: dropped (all_pii)
    # data/ingested and data/deduplicated still hold the raw text, PII included: `dvc push` leaves them out
    # unless this is true (then run `vertical-dag dvc-yaml`, which writes it into dvc.yaml)
    push_unredacted: bool = False

    @field_validator("extra_patterns")
    @classmethod
    def _patterns_compile(cls, v: dict[str, str]) -> dict[str, str]:
        import re

        for name, pattern in v.items():
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                raise ValueError(f"pattern name {name!r} must be capital letters, digits and _ (it becomes <{name}>)")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {name} is not a valid regex: {exc}") from None
        return v


class NormalizeParams(Section):
    enabled: bool = True
    unicode_form: Literal["nfkc_cjk", "nfkc", "nfc", "none"] = "nfkc_cjk"
    strip_markup: bool = True
    traditional_to_simplified: bool = False
    preset: Literal["auto", "general", "legal", "medical", "finance", "technical"] = "auto"  # auto: project.domain
    filters: QualityFilterParams = QualityFilterParams()
    allowed_languages: list[str] = Field(default_factory=list)  # ISO 639-1; empty: any language
    min_lang_score: float = Field(0.4, ge=0, le=1)
    drop_undetermined_language: bool = True  # only applies when allowed_languages is set
    pii: PiiParams = PiiParams()
    batch_size: int = Field(2048, ge=1)


class SplitFractions(Section):
    train: float = Field(0.9, ge=0, le=1)
    validation: float = Field(0.05, ge=0, le=1)
    test: float = Field(0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1, got {total:g}")
        return self


class DecontaminateParams(Section):
    """Train vs evaluation overlap; a key left null takes the preset's value (vertical_dag/text/decontaminate.py)."""

    enabled: bool = True
    preset: Literal["auto", "general", "legal", "medical", "finance", "technical"] = "auto"  # auto: project.domain
    word_ngram: int | None = Field(None, ge=3, le=100)  # word n-grams for space-separated text
    char_ngram: int | None = Field(None, ge=5, le=200)  # character n-grams for CJK text
    max_ngram_families: int | None = Field(None, ge=0)  # n-grams in more families are boilerplate (0: all count)
    min_coverage: float | None = Field(None, gt=0, le=1)  # token share under rare shared n-grams: contaminated
    action: Literal["cut", "dropped", "flagged"] | None = None  # cut shared spans | drop | flag contaminated docs
    internal: bool = True  # also train vs validation/test (families already keep templates apart)
    extra_eval_files: list[str] = Field(default_factory=list)  # JSONL of evaluation tasks (project-relative)


class SplitParams(Section):
    enabled: bool = True
    fractions: SplitFractions = SplitFractions()
    # family_id: a template family (dedup.family_threshold) stays in one split; cluster_id: only near-duplicates;
    # or a meta field (e.g. law_name) kept whole, families following their first document
    group_by: str = "family_id"
    seed: int | None = None  # None: project.seed
    decontaminate: DecontaminateParams = DecontaminateParams()


