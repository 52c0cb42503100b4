"""The model stages' params: base model, pretraining, fine-tuning, evaluation, export and serving."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Section

Device = Literal["auto", "cpu", "cuda"]  # auto: a GPU when there is one


class BaseModelParams(Section):
    """The starting model, imported once into data/models/base/model (safetensors + tokenizer)."""

    source: str = "data/cache/models"  # local HF folder, folder/file holding a GGUF, or a hub id (online only)
    gguf_file: str | None = None  # file name inside `source` when it is a GGUF
    revision: str | None = None  # hub revision (commit) to pin
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class ReadingComprehensionParams(Section):
    """AdaptLLM-style tasks mined from each train document and appended to its text (modeling/reading_comprehension.py)."""

    enabled: bool = False
    max_tasks_per_doc: int = Field(2, ge=1, le=16)
    kinds: list[Literal["definition", "title", "article", "fill_blank", "nli"]] = Field(
        default_factory=lambda: ["definition", "title", "article", "fill_blank", "nli"], min_length=1)
    max_answer_chars: int = Field(120, ge=8)  # answers are cut here; longer sentences are never quoted as claims


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
    reading_comprehension: ReadingComprehensionParams = ReadingComprehensionParams()

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


