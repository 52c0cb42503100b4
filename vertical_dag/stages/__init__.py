"""The stage registry: the one place that says what each stage reads, writes and depends on.

Every front end derives from it: `vertical-dag run` (the stage's inputs and outputs), dvc.yaml (generated
by `vertical-dag dvc-yaml`: deps, params, outs), the Dagster graph (lineage) and the gates (which gates.*
bounds a stage's suite reads). Each stage module exposes `run(ctx: StageContext) -> dict` (its metrics)
and nothing Dagster. Imports of the stage modules are lazy, so `vertical-dag --help` imports neither
torch nor Great Expectations.
"""

from __future__ import annotations

from dataclasses import dataclass

INPUTS = "inputs"  # the stage that fingerprints code and user-named paths (see stages/inputs.py)


@dataclass(frozen=True)
class Plot:
    path: str
    x: str
    y: str
    template: str | None = None


@dataclass(frozen=True)
class Stage:
    name: str  # CLI / DVC stage name (and module vertical_dag.stages.<name>)
    asset: str  # Dagster asset key
    out: str  # main output, relative to the project root
    description: str
    reads: tuple[str, ...] = ()  # stages whose main output this one reads: the lineage
    raw: bool = False  # reads data/raw/ (the raw sources)
    params: tuple[str, ...] = ()  # params.yaml sections / dotted keys the stage reads
    gate_params: tuple[str, ...] = ()  # gates.* keys its quality gate reads (besides gates.enabled)
    path_params: tuple[str, ...] = ()  # params naming user files or folders: fingerprinted as inputs
    plugins: bool = False  # uses the vertical's plugins (project.plugins): their code is an input
    training: bool = False  # a model stage (Dagster: on its own cron, not on every new file)
    push: bool = True  # `dvc push` uploads the main output (off for text that still holds PII)
    reports: tuple[str, ...] = ()  # further outputs (not cached: small files kept in git)
    metrics: tuple[str, ...] = ()  # further metrics files
    plots: tuple[Plot, ...] = ()

    @property
    def metrics_file(self) -> str:
        return f"data/metrics/{self.name}.json"

    @property
    def gate_file(self) -> str:
        return f"data/gates/{self.name}.json"

    @property
    def inputs_file(self) -> str:
        return f"data/inputs/{self.name}.json"


_DATA_GATES = ("gates.min_documents",)

# Lineage order: a stage comes after every stage it reads.
STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage("ingest", "raw_documents", "data/ingested", "raw files -> documents (one part per file)", raw=True,
              params=("ingest", "execution"), gate_params=(*_DATA_GATES, "gates.max_quarantine_rate"), push=False),
        Stage("dedup", "deduplicated", "data/deduplicated", "exact and near duplicates removed",
              reads=("ingest",), params=("dedup", "execution"),
              gate_params=(*_DATA_GATES, "gates.min_duplicate_rate", "gates.max_duplicate_rate"), push=False),
        Stage("normalize", "normalized", "data/normalized", "cleaned, filtered, PII-redacted", reads=("dedup",),
              params=("normalize", "project.domain", "execution"),
              gate_params=(*_DATA_GATES, "gates.min_doc_chars", "ingest.max_doc_chars")),
        Stage("split", "splits", "data/splits", "train / validation / test, decontaminated",
              reads=("normalize",), params=("split", "project", "execution"), path_params=("split.decontaminate.extra_eval_files",),
              gate_params=(*_DATA_GATES, "gates.split_fraction_tolerance", "gates.split_fraction_sigmas",
                           "gates.max_contamination")),
        Stage("base_model", "base_model", "data/models/base", "the starting model as safetensors",
              params=("base_model",), path_params=("base_model.source",), training=True),
        Stage("pretrain", "pretrained_checkpoint", "data/models/pretrained", "continued pretraining",
              reads=("split", "base_model"), params=("pretrain", "project", "normalize.allowed_languages"),
              path_params=("pretrain.replay_path",),
              gate_params=("gates.min_perplexity_gain",), plugins=True, training=True,
              plots=(Plot("data/plots/pretrain_loss.csv", "step", "loss"),)),
        Stage("finetune", "finetuned_model", "data/models/finetuned", "supervised fine-tuning",
              reads=("split", "base_model", "pretrain"), params=("finetune", "project"),
              path_params=("finetune.instruction_files",), plugins=True, training=True,
              plots=(Plot("data/plots/finetune_loss.csv", "step", "loss"),)),
        Stage("evaluate", "eval_report", "data/reports/eval", "base vs pretrained vs fine-tuned",
              reads=("split", "base_model", "pretrain", "finetune"),
              params=("evaluate", "project", "finetune.system_prompt", "finetune.generation", "finetune.seed",
                      "finetune.max_context_chars", "finetune.max_answer_chars", "finetune.eval_items_per_task",
                      "pretrain.replay_path", "pretrain.replay_ratio", "pretrain.replay_heldout_docs"),
              path_params=("evaluate.general_corpus", "evaluate.eval_files", "pretrain.replay_path"),
              gate_params=("gates.min_domain_bpc_gain", "gates.max_general_bpc_increase",
                           "gates.min_task_accuracy_gain"),
              plugins=True, training=True,
              plots=tuple(Plot(f"data/plots/evaluate_{k}.csv", k, "model", "bar_horizontal")
                          for k in ("domain_bpc", "general_bpc", "task_accuracy"))),
        Stage("export", "exported_model", "data/models/export", "int8 and GGUF copies for CPU inference",
              reads=("split", "finetune"), params=("export", "project.seed", "base_model.source", "base_model.gguf_file"),
              training=True),
    ]
}

RAW = "data/raw"


def stage(name: str) -> Stage:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return STAGES[name]


def upstream(name: str) -> tuple[str, ...]:
    """Every stage `name` depends on, directly or not, in lineage order."""
    seen: list[str] = []

    def visit(n: str) -> None:
        for r in STAGES[n].reads:
            if r not in seen:
                visit(r)
                seen.append(r)

    visit(name)
    return tuple(seen)


DATA_STAGES = tuple(n for n, s in STAGES.items() if not s.training)
TRAINING_STAGES = tuple(n for n, s in STAGES.items() if s.training)
