"""Pipeline stages. Each module exposes `run(ctx: StageContext) -> dict` (its metrics) and nothing Dagster."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    name: str  # CLI / DVC stage name
    module: str  # vertical_dag.stages.<module>
    out: str  # main output folder, relative to the project root
    asset: str  # Dagster asset key


# Lineage order. Imports are lazy (see runner) so `vertical-dag --help` does not import torch or GE.
STAGES: dict[str, StageSpec] = {
    s.name: s
    for s in [
        StageSpec("ingest", "ingest", "data/ingested", "raw_documents"),
        StageSpec("dedup", "dedup", "data/deduplicated", "deduplicated"),
        StageSpec("normalize", "normalize", "data/normalized", "normalized"),
        StageSpec("split", "split", "data/splits", "splits"),
        StageSpec("base_model", "base_model", "data/models/base", "base_model"),
        StageSpec("pretrain", "pretrain", "data/models/pretrained", "pretrained_checkpoint"),
        StageSpec("finetune", "finetune", "data/models/finetuned", "finetuned_model"),
        StageSpec("evaluate", "evaluate", "data/reports/eval", "eval_report"),
        StageSpec("export", "export", "data/models/export", "exported_model"),
    ]
}
