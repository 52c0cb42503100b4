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


# ---------------------------------------------------------------- later stages (filled in by their issues)


class DedupParams(Section):
    """Exact (canonical form) and near-duplicate (MinHash + LSH) removal; see vertical_dag/text/dedup_index.py."""

    enabled: bool = True  # false: every document is kept (nothing is indexed)
    exact: bool = True
    near: bool = True
    ngram_cjk: int = Field(5, ge=1, le=32)  # character n-grams over CJK text
    ngram_words: int = Field(3, ge=1, le=16)  # word n-grams over space-separated scripts
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
Device = Literal["auto", "cpu", "cuda"]  # auto: a GPU when there is one


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


class BaseModelParams(Section):
    """The starting model, imported once into data/models/base/model (safetensors + tokenizer)."""

    source: str = "data/cache/models"  # local HF folder, folder/file holding a GGUF, or a hub id (online only)
    gguf_file: str | None = None  # file name inside `source` when it is a GGUF
    revision: str | None = None  # hub revision (commit) to pin
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class PretrainParams(Section):
    """Continued (domain-adaptive) pretraining on the train split, with optional general-text replay."""

    block_size: int = Field(256, ge=8, le=131072)
    batch_size: int = Field(4, ge=1)  # blocks per micro-batch per device
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-4, gt=0, le=1)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(2, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    max_steps: int | None = Field(20, ge=1)  # optimizer steps; or set max_tokens
    max_tokens: int | None = Field(None, ge=1)  # training tokens (converted to steps)
    epochs: float | None = Field(None, gt=0)  # or passes over the packed data
    eval_every: int = Field(10, ge=1)
    eval_blocks: int = Field(8, ge=1)  # validation perplexity on the first N validation blocks
    checkpoint_every: int = Field(10, ge=1)
    keep_checkpoints: int = Field(1, ge=1)
    log_every: int = Field(1, ge=1)
    replay_ratio: float = Field(0.0, ge=0, lt=0.9)  # share of training tokens that are general text
    replay_path: str | None = None  # .txt / .jsonl / .parquet / folder of general text
    replay_heldout_docs: int = Field(200, ge=0)  # general documents kept out of training, for forgetting
    seed: int = 1234
    device: Device = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    compile: bool = False
    threads: int | None = Field(None, ge=1)  # CPU threads for torch (None: torch's default)

    @model_validator(mode="after")
    def _length(self) -> PretrainParams:
        if sum(x is not None for x in (self.max_steps, self.max_tokens, self.epochs)) != 1:
            raise ValueError("set exactly one of max_steps, max_tokens, epochs (the others null)")
        if self.replay_ratio > 0 and not self.replay_path:
            raise ValueError("replay_ratio > 0 needs replay_path")
        return self


class GenerationParams(Section):
    """Decoding settings shared by `vertical-dag generate` and the sample prompts of the eval report."""

    mode: Literal["greedy", "sample"] = "greedy"
    max_new_tokens: int = Field(128, ge=1, le=8192)
    temperature: float = Field(0.7, gt=0, le=5)
    top_p: float = Field(0.9, gt=0, le=1)
    repetition_penalty: float = Field(1.1, ge=1, le=3)
    stop: list[str] = Field(default_factory=list)  # output is cut at the first of these
    max_prompt_tokens: int = Field(1024, ge=8)  # longer prompts are refused with a clear error
    normalize_prompts: bool = True  # prompts cleaned as the normalize stage cleaned the corpus
    redact_pii: bool = False  # prompts PII-redacted (normalize.pii patterns) before the model or a log sees them


class FinetuneParams(Section):
    """Supervised fine-tuning: user instruction files + tasks generated from the corpus, mixed by weight."""

    enabled: bool = True
    init_from: Literal["pretrained", "base"] = "pretrained"
    # Weight of each source of instruction data: "user" (instruction_files), the built-in tasks and the
    # plugins' tasks; 0 leaves one out, a task not listed weighs 1. Unknown task names are rejected.
    task_weights: dict[str, float] = Field(default_factory=lambda: {
        "user": 1.0, "heading_passage": 0.5, "continuation": 0.5, "fill_in": 1.0})
    instruction_files: list[str] = Field(default_factory=list)  # globs, relative to the project root
    system_prompt: str | None = None  # None: the chat template's own default
    max_train_items: int = Field(120, ge=1)
    eval_items_per_task: int = Field(40, ge=0)  # held-out items per task, made from test documents only
    max_context_chars: int = Field(100, ge=16)  # passage shown in a prompt
    max_answer_chars: int = Field(100, ge=4)  # reference answers are cut here
    method: Literal["full", "lora"] = "lora"
    lora_r: int = Field(16, ge=1, le=1024)
    lora_alpha: float = Field(32, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: list[str] | Literal["all-linear"] = "all-linear"
    block_size: int = Field(512, ge=16)
    packing: bool = True
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_steps: int = Field(40, ge=1)  # optimizer steps; training ends at this or after `epochs`
    epochs: float = Field(1.0, gt=0)
    lr: float = Field(1e-3, gt=0, lt=1)  # LoRA takes a higher rate than full fine-tuning
    warmup_steps: int = Field(4, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine decays to lr * min_lr_ratio
    grad_clip: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(10, ge=1)  # steps; a crashed run resumes from the last one
    log_every: int = Field(1, ge=1)
    dtype: Literal["float32", "bfloat16"] = "float32"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # autocast; auto: bf16 on GPU, fp32 on CPU
    device: Device = "auto"  # training and `vertical-dag generate` (auto: a GPU when there is one)
    seed: int = 1234
    generation: GenerationParams = GenerationParams()

    @field_validator("task_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        # task names are checked against the registered tasks once the plugins are known (parse_params)
        if any(w < 0 for w in v.values()):
            raise ValueError("weights must be >= 0")
        return v


class EvaluateParams(Section):
    """Base vs pretrained vs fine-tuned: bits per character with intervals, task accuracy, the user's benchmarks,
    samples. Numbers only: the model gates judge them in the quality layer (bounds under `gates:`)."""

    enabled: bool = True
    max_test_docs: int = Field(120, ge=1)  # test documents sampled for domain bits per character
    max_general_docs: int = Field(150, ge=1)  # general-text documents sampled (forgetting)
    max_doc_chars: int = Field(48, ge=8)  # each sampled document is scored on its first N characters
    general_corpus: str | None = None  # a text/JSONL/Parquet file of general text (forgetting check)
    batch_size: int = Field(16, ge=1)  # documents per forward pass
    max_task_items: int = Field(90, ge=0)  # held-out generated items scored per model
    max_free_answer_items: int = Field(10, ge=0)  # of those, free-answer ones (generation is slow)
    max_option_chars: int = Field(32, ge=4)  # passage options are scored on their first N characters (cost)
    eval_files: list[str] = Field(default_factory=list)  # the user's benchmark files (globs; JSON / JSONL)
    max_items_per_file: int = Field(200, ge=1)  # a seeded sample of each benchmark file's items
    bootstrap_samples: int = Field(1000, ge=10)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    sample_prompts: list[str] = Field(default_factory=list)  # empty: the plugins' sample prompts
    held_out_samples: int = Field(4, ge=0)  # held-out items answered in the report beside their reference
    sample_max_new_tokens: int = Field(48, ge=1)
    device: Device = "auto"  # where models are scored (auto: a GPU when there is one)
    seed: int = 1234


class ExportParams(Section):
    """Compressed copies of the fine-tuned model for CPU inference, and what they cost in quality and speed."""

    enabled: bool = True
    int8: bool = True  # int8 per-channel weights (safetensors); both CPU kernels are measured
    int8_kernel: Literal["weight_only", "dynamic"] = "weight_only"  # what `--model int8` runs (see modeling/quantize.py)
    gguf: bool = True  # a GGUF file for llama.cpp / Ollama (Llama-family models)
    gguf_type: Literal["q8_0", "f16", "f32"] = "q8_0"
    max_eval_docs: int = Field(30, ge=1)  # test documents scored for bits/char, each copy against float32
    max_eval_tokens: int = Field(1500, ge=16)
    speed_new_tokens: int = Field(16, ge=1, le=1024)  # tokens/s: greedy continuation of a test document
    threads: int | None = Field(None, ge=1)  # CPU threads while measuring (None: torch's default)


class ServeParams(Section):
    """`vertical-dag serve`: an OpenAI-compatible HTTP server (flags override these)."""

    host: str = "127.0.0.1"  # localhost only unless asked; set an API key before binding wider
    port: int = Field(8000, ge=1, le=65535)
    model: str = "finetuned"  # finetuned | pretrained | base | int8 | a model folder
    max_batch_size: int = Field(8, ge=1, le=256)  # queued requests decoded together
    batch_wait_ms: float = Field(5.0, ge=0, le=1000)  # how long the first request waits for company
    max_queue: int = Field(64, ge=1)  # requests waiting beyond this are refused with 429


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
    from .plugins import PluginError, load_registry  # stdlib + the plugins' own imports: no torch here

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
