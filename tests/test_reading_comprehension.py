"""Reading-comprehension pretraining (AdaptLLM): tasks mined from Chinese and English documents, answers that
are the documents' own text, determinism, and the pretrain stage's tokens with the option on and off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vertical_dag.modeling import reading_comprehension as rc
from vertical_dag.modeling.tasks import Doc, DocFields

from .conftest import run_cli

FIELDS = DocFields(title=("law_name", "title"), subtitle=None, number="article_no")

ZH = [
    ("第二条　本法所称个人信息，是指以电子或者其他方式记录的与已识别或者可识别的自然人有关的各种信息。"
     "个人信息的处理包括个人信息的收集、存储、使用、加工、传输、提供、公开、删除等。", "个人信息保护法", "第二条"),
    ("第五条　处理个人信息应当遵循合法、正当、必要和诚信原则，不得通过误导、欺诈、胁迫等方式处理个人信息。", "个人信息保护法", "第五条"),
    ("第十条　国务院有关部门依照本法规定，负责监督管理工作。县级以上地方人民政府负责本行政区域内的监督管理工作。", "网络安全法", "第十条"),
    ("第三条　本条例所称“危险化学品”，是指具有毒害、腐蚀、爆炸、燃烧、助燃等性质的剧毒化学品和其他化学品。", "危险化学品安全管理条例", "第三条"),
]
EN = [
    ("Section 2. In this Act, \"personal data\" means any information relating to an identified or identifiable "
     "natural person. A controller shall keep records of every processing operation.", "Data Protection Act", "Section 2"),
    ("The term processor refers to a person who processes personal data on behalf of the controller. Processors "
     "must notify the controller of any breach without undue delay.", "Data Protection Act", ""),
    ("Warehouse Safety\nEvery forklift operator must hold a valid licence. Inspections happen monthly and their "
     "results are posted near the loading dock.", "", ""),
]


def docs(rows: list[tuple[str, str, str]], lang: str) -> list[Doc]:
    return [Doc(f"{lang}-{i}", text, {k: v for k, v in (("law_name", law), ("article_no", no)) if v}, "train", lang)
            for i, (text, law, no) in enumerate(rows)]


def mined(corpus: list[Doc], **kw) -> list[tuple[Doc, rc.RCTask]]:
    cfg = rc.RCConfig(max_tasks_per_doc=len(rc.KINDS), **kw)
    return [(d, t) for i, d in enumerate(corpus) for t in rc.mine(d, cfg, FIELDS, corpus[(i + 1) % len(corpus)])]


def check_answer(doc: Doc, task: rc.RCTask) -> None:
    """The answer of every kind is what the document itself says."""
    text, answer = doc.text, task.answer.rstrip("…")
    if task.kind in ("definition", "article"):
        assert answer and answer in text, (task, text)
    elif task.kind == "title":
        heading = doc.meta.get("law_name") or text.split("\n", 1)[0]
        number = doc.meta.get("article_no", "")
        assert answer == (f"{heading}{number}" if doc.zh else f"{heading} {number}".strip()), (task, doc.meta)
    elif task.kind == "fill_blank":
        masked = task.question.split("：", 1)[-1] if doc.zh else task.question.split("text: ", 1)[-1]
        assert masked.count("____") == 1 and masked.replace("____", task.answer) in text, task
    elif task.kind == "nli":
        claim = task.question.split("“", 1)[1].rsplit("”", 1)[0] if doc.zh else task.question.split('"', 1)[1].rsplit('"', 1)[0]
        assert (claim in text) == (task.answer in ("是", "Yes")), (task, text)
    else:
        raise AssertionError(task.kind)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_kind_is_mined_and_answered_by_the_text(lang: str) -> None:
    corpus = docs(ZH if lang == "zh" else EN, lang)
    found = mined(corpus)
    assert {t.kind for _, t in found} == set(rc.KINDS)
    for doc, task in found:
        check_answer(doc, task)
    terms = {t.question.split("“" if lang == "zh" else '"')[1].split("”" if lang == "zh" else '"')[0]
             for _, t in found if t.kind == "definition"}
    assert ("个人信息" if lang == "zh" else "personal data") in terms
    assert all(any(term in d.text for d in corpus) for term in terms) and "本法所称个人信息" not in terms
    rendered = rc.render([t for d, t in found if d is corpus[0]], corpus[0].zh)
    assert rendered.startswith("\n\n") and ("问：" in rendered) == (lang == "zh") and ("Question: " in rendered) == (lang == "en")


def test_nli_gives_both_answers_and_false_claims_come_from_another_document() -> None:
    answers = {t.answer for seed in range(12) for _, t in mined(docs(ZH, "zh"), seed=seed) if t.kind == "nli"}
    assert answers == {"是", "否"}


def test_mining_is_seeded_and_limited() -> None:
    corpus = docs(ZH, "zh") + docs(EN, "en")
    cfg = rc.RCConfig(max_tasks_per_doc=2, seed=7)
    a, counts = rc.mine_corpus(corpus, cfg, FIELDS)
    # the same tasks in another process whose str hashes (set and dict orders) differ: nothing depends on them
    code = ("import json; from tests.test_reading_comprehension import EN, FIELDS, ZH, docs, rc; "
            "print(json.dumps(rc.mine_corpus(docs(ZH, 'zh') + docs(EN, 'en'), "
            "rc.RCConfig(max_tasks_per_doc=2, seed=7), FIELDS)[0], ensure_ascii=False))")
    other = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=True,
                           capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert json.loads(other.stdout) == list(a)
    per_doc = [s.count("\n\n") for s in a]  # each task is rendered after a blank line
    assert max(per_doc) == 2 and sum(per_doc) == sum(counts.values())  # the cap is reached and never passed
    assert any(rc.mine_corpus(corpus, rc.RCConfig(max_tasks_per_doc=2, seed=s), FIELDS)[0] != a
               for s in range(8, 12)), "another seed picks other tasks"
    only = rc.mine_corpus(corpus, rc.RCConfig(kinds=("title",)), FIELDS)[1]
    assert set(only) == {"title"}


def test_no_structure_no_tasks() -> None:
    assert rc.mine(Doc("x", "ok", {}, "train", "en"), rc.RCConfig(), FIELDS) == []


# ---------------------------------------------------------------- the stage, on and off


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    from vertical_dag.modeling.tiny import build_tiny_llama

    return build_tiny_llama(tokenizer_dir, tmp_path_factory.mktemp("tiny") / "model", hidden=32, layers=2, heads=2,
                            kv_heads=1, intermediate=64)


def _write_splits(root: Path) -> list[str]:
    splits = root / "data" / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    rows = {"train": [(t.replace("第", f"第{i}", 1), law, no) for i in range(30) for t, law, no in ZH],
            "validation": [("第一条　验证集的文字只用于测量困惑度，不参加训练。", "验证法", "第一条")] * 4,
            "test": [("第一条　测试集的文字只用于评测任务，不参加训练。", "测试法", "第一条")] * 4}
    for name, items in rows.items():
        n = len(items)
        pq.write_table(pa.table({
            "doc_id": [f"{name}-{i}" for i in range(n)], "text": pa.array([t for t, _, _ in items], pa.large_string()),
            "lang": ["zh"] * n, "split": [name] * n,
            "meta": [json.dumps({"law_name": law, "article_no": no}, ensure_ascii=False) for _, law, no in items],
        }), splits / f"{name}.parquet")
    return [t for t, _, _ in rows["train"]]


def test_stage_on_changes_the_training_tokens_and_off_keeps_them(project: Path, tiny_dir: Path) -> None:
    import yaml

    from vertical_dag.modeling.load import load_model_folder
    from vertical_dag.modeling.packing import pack, tokenize

    texts = _write_splits(project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["base_model"] = {"source": str(tiny_dir), "gguf_file": None}
    params["project"]["plugins"] = ["vertical_dag_china_law"]
    params["pretrain"] = {"block_size": 64, "batch_size": 2, "max_steps": 1, "eval_every": 1, "eval_blocks": 1,
                          "checkpoint_every": 1, "threads": 1, "seed": 3}
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    run_cli("run", "base_model", cwd=project)
    off = json.loads(run_cli("run", "pretrain", "--json", cwd=project).stdout)

    _, tok = load_model_folder(tiny_dir)
    order = np.random.default_rng(3).permutation(len(texts))
    train_docs = tokenize(tok, texts)
    today = pack([train_docs[i] for i in order], 64, tok.eos_token_id, tok.pad_token_id or tok.eos_token_id)
    assert off["data_fingerprint"] == today.fingerprint() and "rc_tasks" not in off

    params["pretrain"]["reading_comprehension"] = {"enabled": True, "max_tasks_per_doc": 3}
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    on = json.loads(run_cli("run", "pretrain", "--json", cwd=project).stdout)
    assert on["data_fingerprint"] != off["data_fingerprint"]
    # what trains is each statute followed by the tasks mined from it with these params, in the same order
    from vertical_dag.modeling.tasks import docs_from_rows
    from vertical_dag.plugins import load_registry

    fields = load_registry(["vertical_dag_china_law"], project).doc_fields
    rows = pq.read_table(project / "data/splits/train.parquet").to_pylist()
    suffixes, counts = rc.mine_corpus(docs_from_rows(rows), rc.RCConfig(max_tasks_per_doc=3, seed=3), fields)
    suffix_tokens = tokenize(tok, suffixes)
    mined = [np.concatenate([d, s]) if len(s) else d for d, s in zip(train_docs, suffix_tokens, strict=True)]
    expected = pack([mined[i] for i in order], 64, tok.eos_token_id, tok.pad_token_id or tok.eos_token_id)
    assert on["data_fingerprint"] == expected.fingerprint()
    # the domain tokens counted are the statutes' and their tasks', each document closed by its EOS token
    assert on["domain_tokens"] == sum(len(d) + 1 for d in mined)
    assert off["domain_tokens"] == sum(len(d) + 1 for d in train_docs) < on["domain_tokens"]
    assert on["rc_tokens"] == sum(len(t) for t in suffix_tokens) and on["rc_tasks"] == sum(counts.values())
    kinds = on["rc_tasks_by_kind"]
    assert all(kinds[k] > 0 for k in ("title", "article", "fill_blank", "nli", "definition")), kinds
    with_tasks = on["rc_documents_with_tasks"]  # counted from the documents, apart from the tasks
    assert with_tasks == len(texts)  # every statute here has a title and an article to ask about
    assert on["documents_out"] == off["documents_out"] == len(texts)  # tasks ride on their document, not as documents
