"""A new user's own boilerplate-heavy vertical on defaults: `vertical-dag init --domain legal`, contract
variants built from the licence texts installed with the environment's packages in data/raw, a tiny Llama
as the base model, `dvc repro` to the report. Template families stay in one split, decontamination keeps
the training data, the contamination gate passes with its default bound."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from vertical_dag.params import Params
from vertical_dag.text.splitting import SPLITS

from .boilerplate_corpus import contracts, licence_paragraphs, write_raw
from .conftest import BIN, run_cli

# Model settings sized for a 64-wide, 2-layer model; the model gates are not what this test checks (a tiny
# random model is not expected to gain task accuracy), so only those bounds are opened. Data settings and
# data gates stay on their defaults.
TINY = {
    "pretrain": {"block_size": 64, "batch_size": 2, "max_steps": 4, "eval_every": 2, "eval_blocks": 2,
                 "checkpoint_every": 4, "lr": 0.001},
    "finetune": {"max_train_items": 8, "eval_items_per_task": 2, "block_size": 128, "max_steps": 2,
                 "checkpoint_every": 2},
    "evaluate": {"max_test_docs": 4, "max_general_docs": 4, "max_doc_chars": 64, "max_task_items": 6,
                 "max_free_answer_items": 1, "bootstrap_samples": 20, "sample_max_new_tokens": 4},
    "gates": {"min_perplexity_gain": -1000.0, "min_domain_bpc_gain": -1000.0, "min_task_accuracy_gain": -1.0},
}


def test_licence_paragraphs_are_real_text_from_installed_packages():
    paragraphs = licence_paragraphs()
    assert len(paragraphs) > 100
    assert any("WITHOUT WARRANTY OF ANY KIND" in p for p in paragraphs)  # the MIT / BSD disclaimer
    records = contracts()
    titles = defaultdict(int)
    for r in records:
        titles[r["title"]] += 1
    assert len(records) > 800 and len(titles) == 48 and max(titles.values()) > 30


def _families_by_split(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]], int]:
    family_splits: dict[str, set[str]] = defaultdict(set)
    template_splits: dict[str, set[str]] = defaultdict(set)
    n = 0
    for name in SPLITS:
        for row in pq.read_table(root / "data/splits" / f"{name}.parquet", columns=["family_id", "meta"]).to_pylist():
            family_splits[row["family_id"]].add(name)
            template_splits[json.loads(row["meta"])["title"]].add(name)
            n += 1
    return family_splits, template_splits, n


@pytest.mark.slow
def test_contract_templates_go_through_dvc_repro_on_defaults(tmp_path, tokenizer_dir):
    from vertical_dag.modeling.tiny import build_tiny_llama

    root = tmp_path / "contracts"
    run_cli("init", str(root), "--domain", "legal", cwd=tmp_path)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_raw(root, contracts())
    build_tiny_llama(tokenizer_dir, root / params["base_model"]["source"])

    proc = subprocess.run([str(BIN / "dvc"), "repro"], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (root / "data/reports/eval/report.html").exists()

    split = json.loads((root / "data/metrics/split.json").read_text())
    assert split["documents_in"] > 400
    assert split["dropped"] / split["documents_in"] < 0.05  # the training data survives decontamination
    assert split["decontamination"]["eval_docs_sharing_rare_ngrams"] <= 1  # leakage removed, not tolerated
    gate = {e["name"]: e for e in json.loads((root / "data/gates/split.json").read_text())["expectations"]}
    assert gate["no_contamination"]["success"] and gate["families_in_one_split"]["success"]
    assert Params().gates.max_contamination == 0.5 and params["gates"]["max_contamination"] == 0.5  # bound as shipped

    family_splits, template_splits, n = _families_by_split(root)
    assert max(len(s) for s in family_splits.values()) == 1
    assert len(family_splits) < 0.2 * n  # variants were grouped: far fewer families than documents
    # against the generator's ground truth: hardly any contract form has variants on both sides
    assert sum(len(s) > 1 for s in template_splits.values()) <= 0.1 * len(template_splits)
