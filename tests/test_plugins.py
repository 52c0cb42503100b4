"""A vertical's own content as a plugin: registered from params, loaded from the project folder, validated."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from vertical_dag.modeling import tasks as T
from vertical_dag.modeling.replay import read_general_texts
from vertical_dag.plugins import PluginError, load_registry

from .conftest import run_cli

# A contracts vertical, written the way a user would: a module in the project folder, nothing installed.
CONTRACTS_PLUGIN = textwrap.dedent('''
    from vertical_dag.modeling.tasks import DocFields, TaskItem, body, cut
    from vertical_dag.plugins import VerticalPlugin


    def clause_type(doc, cfg):
        """Which kind of clause is this? (a label task over the corpus's own clause types)"""
        kind, kinds = doc.meta.get("clause_type"), cfg.labels("clause_type")
        if not kind or len(kinds) < 2:
            return None
        prompt = f"Which kind of clause is this ({', '.join(kinds)})?\\n{cut(body(doc, cfg), cfg.max_context_chars)}"
        return TaskItem("clause_type", prompt, kind, options=kinds, answer_index=kinds.index(kind))


    PLUGIN = VerticalPlugin(name="contracts", tasks={"clause_type": clause_type},
                            sample_prompts=["What does a termination clause say?"],
                            doc_fields=DocFields(title=("heading",), group="contract"))
''')

CLAUSES = {
    "termination": "Either party may terminate this agreement with thirty days written notice to the other party.",
    "payment": "The customer shall pay each invoice within forty five days of receipt by bank transfer.",
    "confidentiality": "Each party shall keep the other party's confidential information secret and use it only here.",
}


def contract_rows(n: int = 12) -> list[dict]:
    rows = []
    for i in range(n):
        for kind, text in CLAUSES.items():
            meta = {"clause_type": kind, "contract": f"contract-{i}", "heading": f"Section {i} {kind.title()}"}
            split = "test" if i % 4 == 0 else "validation" if i % 4 == 1 else "train"
            rows.append({"doc_id": f"c{i}-{kind}", "source": "contracts", "uri": f"c{i}.txt", "batch": "b1",
                         "text": f"Clause {i}: {text} It binds the party and the customer.", "lang": "en",
                         "meta": json.dumps(meta), "split": split})
    return rows


def contracts_project(root: Path, tokenizer_dir: Path, task_weights: dict[str, float]) -> Path:
    from vertical_dag.modeling.tiny import build_tiny_llama

    root.mkdir(parents=True)
    (root / "contracts_vertical.py").write_text(CONTRACTS_PLUGIN)
    params = {"project": {"name": "contracts", "plugins": ["contracts_vertical"]},
              "finetune": {"task_weights": task_weights, "max_steps": 2, "block_size": 192, "max_train_items": 16,
                           "eval_items_per_task": 3, "max_context_chars": 60, "max_answer_chars": 60}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "data/splits").mkdir(parents=True)
    rows = contract_rows()
    for split in ("train", "validation", "test"):
        pq.write_table(pa.Table.from_pylist([r for r in rows if r["split"] == split]), root / f"data/splits/{split}.parquet")
    build_tiny_llama(tokenizer_dir, root / "data/models/base/model", max_positions=512)
    return root


def test_a_project_plugin_reaches_the_training_mix_and_the_eval_set(tmp_path, tokenizer_dir):
    root = contracts_project(tmp_path / "contracts", tokenizer_dir, {"clause_type": 3.0, "fill_in": 0.0})
    run_cli("run", "finetune", "--no-gate", cwd=root)
    tasks_dir = root / "data/models/finetuned/tasks"
    train, held = T.read_items(tasks_dir / "train.jsonl"), T.read_items(tasks_dir / "eval.jsonl")
    trained = [it for it in train if it.task == "clause_type"]
    assert len(trained) >= len(train) // 2 and not any(it.task == "fill_in" for it in train)  # weights apply
    assert all(it.split == "train" and it.options and it.options[it.answer_index] == it.response for it in trained)
    evaluated = [it for it in held if it.task == "clause_type"]
    assert len(evaluated) == 3 and {it.response for it in evaluated} == set(CLAUSES)  # balanced: one per label
    assert all(it.split == "test" for it in evaluated)
    # the generic passage tasks group distractors by the plugin's field (contract), not by any law name
    headings = [it for it in held if it.task == "heading_passage"]
    assert headings and all(it.meta["group"].startswith("contract-") and len(it.options) == 4 for it in headings)


def test_unknown_task_names_and_broken_plugins_stop_with_exit_2_naming_the_key(tmp_path, tokenizer_dir):
    root = contracts_project(tmp_path / "contracts", tokenizer_dir, {"clause_typ": 1.0})
    proc = run_cli("run", "finetune", cwd=root, check=False)
    assert proc.returncode == 2 and "finetune.task_weights.clause_typ" in proc.stderr and "clause_type" in proc.stderr
    (root / "contracts_vertical.py").write_text("import no_such_dependency\n")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["finetune"]["task_weights"] = {"fill_in": 1.0}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_cli("run", "finetune", cwd=root, check=False)
    assert proc.returncode == 2 and "project.plugins.0 = 'contracts_vertical'" in proc.stderr
    assert "no_such_dependency" in proc.stderr
    assert not (root / "data/models/finetuned").exists()  # nothing touched


def test_registry_merges_plugins_and_refuses_a_taken_task_name(tmp_path):
    reg = load_registry(["vertical_dag_china_law"])
    assert reg.task_names == ["user", "heading_passage", "continuation", "fill_in", "article_lookup", "law_department",
                              "in_force"]
    assert reg.doc_fields.group == "law_name" and reg.sample_prompts
    (tmp_path / "greedy_plugin.py").write_text(
        "from vertical_dag.plugins import VerticalPlugin\nPLUGIN = VerticalPlugin('x', tasks={'fill_in': print})\n")
    with pytest.raises(PluginError, match="'fill_in' is already taken"):
        load_registry(["greedy_plugin"], tmp_path)
    assert set(load_registry([]).tasks) == set(T.GENERIC_TASKS)  # no plugin: the generic tasks only


def test_the_example_plugin_reads_pos_tagged_general_text(tmp_path):
    from vertical_dag_china_law import PLUGIN
    from vertical_dag_china_law.general import strip_pos_tags

    assert strip_pos_tags("19980101-01-001-002/m  中共中央/nt  总书记/n  、/w  [国家/n  主席/n]nt") == "中共中央总书记、国家主席"
    f = tmp_path / "pd.txt"
    f.write_text("迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  ——/w  一九九八年/t  新年/t  讲话/n  。/w\n", encoding="utf-8")
    assert read_general_texts(f, min_chars=5, readers=PLUGIN.general_readers) == ["迈向充满希望的新世纪——一九九八年新年讲话。"]
    assert read_general_texts(f, min_chars=5)[0].startswith("迈向/v")  # the library alone reads plain lines
    plain = tmp_path / "plain.txt"
    plain.write_text("An ordinary paragraph of general English text.\n")
    assert read_general_texts(plain, readers=PLUGIN.general_readers) == ["An ordinary paragraph of general English text."]
