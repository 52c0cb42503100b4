"""Model cards: every model folder's README.md is a card huggingface_hub reads back, with lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import ModelCard

from vertical_dag.modeling.card import finetuned_card, gguf_facts, model_card
from vertical_dag.project import Project
from vertical_dag.stages.context import run_stage

UPSTREAM_CARD = "---\nlicense: mit\nbase_model: example-org/tiny-llama\nlanguage: [zh]\n---\n\n# tiny\n"


@pytest.fixture
def base_project(project: Path, tokenizer_dir: Path) -> Path:
    """A project whose base model is a tiny local HF folder that came with its own (upstream) card."""
    from vertical_dag.modeling.tiny import build_tiny_llama

    src = project / "data" / "cache" / "models" / "tiny"
    build_tiny_llama(tokenizer_dir, src, hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64)
    (src / "README.md").write_text(UPSTREAM_CARD, encoding="utf-8")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["base_model"] = {"source": "data/cache/models/tiny"}
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    run_stage("base_model", Project(project))
    return project


def test_base_model_folder_gets_a_card(base_project: Path) -> None:
    card = ModelCard.load(base_project / "data/models/base/model/README.md")
    data = card.data.to_dict()
    assert data["license"] == "mit"  # from the upstream card
    assert data["base_model"] == "example-org/tiny-llama"
    assert data["pipeline_tag"] == "text-generation" and data["library_name"] == "transformers"
    assert "datasets" not in data  # the base model was not trained on this project's data
    lineage = data["vertical_dag"]
    assert lineage["role"] == "base" and len(lineage["git_commit"]) == 40
    record = json.loads((base_project / "data/models/base/source.json").read_text())
    assert lineage["datasets"]["weights sha256"] == record["output_sha256"]
    assert "# tiny (imported)" in card.text


def test_pretrained_card_has_model_index_languages_and_lineage(base_project: Path) -> None:
    splits = base_project / "data/splits"
    splits.mkdir(parents=True)
    pq.write_table(pa.table({"text": ["甲", "乙", "丙", "x"], "lang": ["zh", "zh", "zh", "und"]}), splits / "train.parquet")
    (base_project / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    from vertical_dag.modeling.card import train_languages

    text = model_card(
        title="law: continued pretraining", role="pretrained", root=base_project, languages=train_languages(splits),
        base={"source": "data/cache/models/tiny", "kind": "hf_folder", "warnings": ["an instruct model"]},
        data={"train": "sha256 abc", "validation": "sha256 def"}, params={"lr": 2e-4},
        metrics={"val_perplexity_base": 40.5, "val_perplexity_final": 21.25, "note": "{{ not a template }}"},
        gates={"split": {"success": True, "expectations": [{"name": "no_leak", "success": True}]}},
    )
    path = base_project / "card.md"
    path.write_text(text, encoding="utf-8")
    card = ModelCard.load(path)
    assert card.data.datasets == ["data/splits"]
    assert card.data.language == ["zh"]
    assert card.data.base_model == "example-org/tiny-llama"  # read back from the base folder's card
    assert card.data.license == "mit"
    results = {r.metric_name: r for r in card.data.eval_results}
    final = results["validation perplexity"]
    assert final.metric_type == "perplexity" and final.metric_value == 21.25
    assert final.dataset_split == "validation" and final.task_type == "text-generation"
    assert results["validation perplexity (before training)"].metric_value == 40.5
    lineage = card.data.to_dict()["vertical_dag"]
    assert lineage["datasets"] == {"train": "sha256 abc", "validation": "sha256 def"}
    assert len(lineage["dvc_lock_sha256"]) == 64
    assert "{{ not a template }}" in card.text and "> warning: an instruct model" in card.text
    assert card.data.to_dict()["model-index"][0]["name"] == "law: continued pretraining"


def test_finetuned_card_hashes_its_task_files(base_project: Path) -> None:
    tasks = base_project / "data/models/finetuned/tasks"
    tasks.mkdir(parents=True)
    (tasks / "train.jsonl").write_text('{"prompt": "问", "answer": "答"}\n', encoding="utf-8")
    init = base_project / "data/models/pretrained/model"
    text = finetuned_card(base_project, init, tasks, {"val_loss": 1.5, "method": "lora"}, {"method": "lora"})
    (base_project / "ft.md").write_text(text, encoding="utf-8")
    card = ModelCard.load(base_project / "ft.md")
    lineage = card.data.to_dict()["vertical_dag"]
    assert lineage["role"] == "finetuned"
    assert lineage["base_model"]["started_from"] == "data/models/pretrained/model"
    assert len(lineage["datasets"]["tasks/train.jsonl"]) == 64
    assert card.data.eval_results[0].metric_type == "loss" and card.data.eval_results[0].metric_value == 1.5
    assert card.data.base_model == "example-org/tiny-llama" and card.data.base_model_relation == "finetune"


@pytest.mark.slow
def test_gguf_metadata_names_license_and_hub_id(smollm2_gguf: Path) -> None:
    facts = gguf_facts(smollm2_gguf)
    assert facts == {"license": "apache-2.0", "languages": "en", "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct"}
