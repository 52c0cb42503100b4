"""Splits: stable hash assignment by group, clusters never straddle splits, decontamination, splits.json."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vertical_dag.records import DOC_SCHEMA, read_ledger, write_parquet
from vertical_dag.stages.context import run_stage
from vertical_dag.text.splitting import SPLITS, assign, group_keys

from .test_normalize import doc_rows, make_project

NORM_SCHEMA = pa.unify_schemas([DOC_SCHEMA, pa.schema([("cluster_id", pa.string()), ("canonical_hash", pa.string()),
                                                       ("pii_count", pa.int32())])])
FRACTIONS = (0.8, 0.1, 0.1)
SEED = 1234

HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def article(i: int) -> str:
    """Distinct synthetic articles: random characters, so no two share a 20-character run by accident."""
    rng = random.Random(i)
    return f"第{i}条　" + "".join(rng.choice(HAN) for _ in range(40)) + "。"


def write_norm_part(root: Path, name: str, rows: list[dict]) -> None:
    for r in rows:
        r["lang"], r["pii_count"] = "zh", 0
    write_parquet(pa.Table.from_pylist(rows, schema=NORM_SCHEMA), root / "data/normalized/parts" / f"{name}.parquet")


def split_map(root: Path) -> dict[str, str]:
    out = {}
    for name in SPLITS:
        t = pq.read_table(root / "data/splits" / f"{name}.parquet", columns=["doc_id", "split"])
        assert set(t.column("split").to_pylist()) <= {name}
        out.update(zip(t.column("doc_id").to_pylist(), t.column("split").to_pylist(), strict=True))
    return out


def key_in(split: str, prefix: str, start: int = 0) -> str:
    """A cluster id that the hash sends to `split` (so a test can place documents on purpose)."""
    return next(f"{prefix}{i}" for i in range(start, start + 10_000) if assign(SEED, f"cluster={prefix}{i}", FRACTIONS) == split)


def params(**split) -> dict:
    return {"project": {"domain": "legal", "seed": SEED},
            "split": {"fractions": dict(zip(SPLITS, FRACTIONS, strict=True)), **split}}


# ---------------------------------------------------------------- pure assignment


def test_assignment_is_stable_and_follows_fractions():
    keys = [f"k{i}" for i in range(20_000)]
    got = Counter(assign(SEED, k, FRACTIONS) for k in keys)
    for name, frac in zip(SPLITS, FRACTIONS, strict=True):
        assert abs(got[name] / len(keys) - frac) < 0.015
    assert [assign(SEED, k, FRACTIONS) for k in keys[:100]] == [assign(SEED, k, FRACTIONS) for k in keys[:100]]
    assert Counter(assign(SEED + 1, k, FRACTIONS) for k in keys[:1000]) != Counter(assign(SEED, k, FRACTIONS) for k in keys[:1000])
    assert {assign(SEED, k, (1.0, 0.0, 0.0)) for k in keys[:500]} == {"train"}


def test_meta_grouping_keeps_a_cluster_with_its_canonical_document():
    ids = ["a", "b", "c", "d"]
    clusters = ["a", "a", "c", None]
    metas = [json.dumps({"law_name": "民法典"}), json.dumps({"law_name": "刑法"}), json.dumps({}), "not json"]
    keys = group_keys(ids, clusters, metas, "law_name")
    assert keys == ["law_name=民法典", "law_name=民法典", "cluster=c", "cluster=d"]


# ---------------------------------------------------------------- the stage


def test_clusters_stay_whole_outputs_and_conservation(tmp_path):
    proj = make_project(tmp_path / "p", params(decontaminate={"enabled": False}))
    texts = [article(i) for i in range(600)]
    clusters = [f"c{i // 3}" for i in range(600)]  # clusters of three near-copies
    write_norm_part(proj.root, "law/2010s", doc_rows(texts[:300], "2010s", clusters=clusters[:300]))
    write_norm_part(proj.root, "law/2020s", doc_rows(texts[300:], "2020s", clusters=clusters[300:], source="other"))
    m = run_stage("split", proj, gate=False)

    assert m["documents_in"] == 600 == m["documents_out"] + m["dropped"] + m["quarantined"]
    assigned = split_map(proj.root)
    assert len(assigned) == 600
    by_cluster: dict[str, set[str]] = {}
    for row in pq.read_table(proj.root / "data/splits/train.parquet").to_pylist() + \
            pq.read_table(proj.root / "data/splits/validation.parquet").to_pylist() + \
            pq.read_table(proj.root / "data/splits/test.parquet").to_pylist():
        by_cluster.setdefault(row["cluster_id"], set()).add(row["split"])
    assert max(len(s) for s in by_cluster.values()) == 1 and len(by_cluster) == 200

    summary = json.loads((proj.root / "data/splits/splits.json").read_text())
    assert sum(summary["splits"][s]["documents"] for s in SPLITS) == 600
    assert all(summary["splits"][s]["documents"] > 0 and summary["splits"][s]["chars"] > 0 for s in SPLITS)
    assert abs(sum(summary["splits"][s]["fraction"] for s in SPLITS) - 1) < 1e-6
    assert set(summary["by_source"]) == {"china_law", "other"}
    assert sum(v["documents"] for v in summary["by_source"]["other"].values()) == 300
    ledger = read_ledger(proj.root / "data/splits/ledger").to_pylist()
    assert Counter(r["action"] for r in ledger) == {"split": 600}


def test_adding_a_batch_never_moves_an_old_document(tmp_path):
    proj = make_project(tmp_path / "p", params())
    write_norm_part(proj.root, "a", doc_rows([article(i) for i in range(400)], "a"))
    run_stage("split", proj, gate=False)
    before = split_map(proj.root)

    write_norm_part(proj.root, "b", doc_rows([article(i) for i in range(400, 800)], "b"))
    m = run_stage("split", proj, gate=False)
    after = split_map(proj.root)
    assert m["documents_in"] == 800 and len(after) == 800
    assert all(after[d] == s for d, s in before.items())


def test_group_by_law_name_keeps_each_law_in_one_split(tmp_path):
    proj = make_project(tmp_path / "p", params(group_by="law_name", decontaminate={"enabled": False}))
    laws = [f"法律{i % 40}" for i in range(400)]
    rows = doc_rows([article(i) for i in range(400)], "x", metas=[{"law_name": law} for law in laws])
    rows[1]["cluster_id"] = rows[0]["doc_id"]  # a near-copy filed under another law follows its canonical document
    write_norm_part(proj.root, "x", rows)
    m = run_stage("split", proj, gate=False)
    assigned = split_map(proj.root)
    per_law: dict[str, set[str]] = {}
    for r, law in zip(rows[2:], laws[2:], strict=True):
        per_law.setdefault(law, set()).add(assigned[r["doc_id"]])
    assert max(len(s) for s in per_law.values()) == 1
    assert assigned[rows[1]["doc_id"]] == assigned[rows[0]["doc_id"]]
    assert m["groups"] == 40


def _contaminated_setup(root: Path) -> tuple[dict, dict]:
    shared = "任何单位和个人不得侵占、挪用、截留或者私分依照本法规定应当用于公共事业的专项资金和物资"
    test_doc = doc_rows([f"第九条　{shared}，违者依法处理。"], "t", ids=["test-doc"], clusters=[key_in("test", "t")])[0]
    train_doc = doc_rows([f"第十条　{shared}，并追究责任。"], "t", ids=["train-doc"], clusters=[key_in("train", "r")])[0]
    clean = doc_rows([article(i) for i in range(50)], "c")
    write_norm_part(root, "t", [test_doc, train_doc, *clean])
    return test_doc, train_doc


def test_decontamination_drops_train_documents_overlapping_test(tmp_path):
    proj = make_project(tmp_path / "p", params())
    _contaminated_setup(proj.root)
    m = run_stage("split", proj, gate=False)
    assert m["dropped"] == 1 and m["drops_by_reason"] == {"contaminated": 1}
    assert m["documents_in"] == 52 == m["documents_out"] + m["dropped"]
    assigned = split_map(proj.root)
    assert "train-doc" not in assigned and assigned["test-doc"] == "test"
    row = next(r for r in read_ledger(proj.root / "data/splits/ledger").to_pylist() if r["action"] == "dropped")
    assert (row["doc_id"], row["reason"], row["ref_doc_id"]) == ("train-doc", "contaminated", "test-doc")
    test_rows = pq.read_table(proj.root / "data/splits/test.parquet").to_pylist()
    assert all(r["contamination"] == 0.0 for r in test_rows)  # nothing left in train overlaps the test split


def test_decontamination_can_flag_instead(tmp_path):
    proj = make_project(tmp_path / "p", params(decontaminate={"action": "flagged"}))
    _contaminated_setup(proj.root)
    m = run_stage("split", proj, gate=False)
    assert m["dropped"] == 0 and m["flagged"] == 1 and m["documents_out"] == 52
    train = {r["doc_id"]: r for r in pq.read_table(proj.root / "data/splits/train.parquet").to_pylist()}
    assert train["train-doc"]["contaminated"] and train["train-doc"]["contamination"] > 0
    flagged = [r for r in read_ledger(proj.root / "data/splits/ledger").to_pylist() if r["action"] == "flagged"]
    assert [(r["doc_id"], r["ref_doc_id"]) for r in flagged] == [("train-doc", "test-doc")]
    test_row = next(r for r in pq.read_table(proj.root / "data/splits/test.parquet").to_pylist() if r["doc_id"] == "test-doc")
    assert test_row["contamination"] > 0  # the gate can see the overlap that was kept


def test_decontamination_against_evaluation_task_files(tmp_path):
    english = ("the contractor shall indemnify and hold harmless the owner against all claims arising from "
               "negligent performance of the work under this agreement")
    proj = make_project(tmp_path / "p", params(decontaminate={
        "extra_eval_files": ["evals/tasks.jsonl", "evals/missing.jsonl"], "char_ngram": 20}))
    evals = proj.root / "evals"
    evals.mkdir()
    (evals / "tasks.jsonl").write_text(
        json.dumps({"id": "q1", "input": [{"role": "user", "content": f"Is this fair? {english}"}], "ideal": "yes"}) + "\n"
        + "{not json\n"
        + json.dumps({"prompt": "《专利法》第一条规定了什么？", "completion": "为了保护专利权人的合法权益，鼓励发明创造，推动发明创造的应用"},
                     ensure_ascii=False) + "\n")
    en_doc = doc_rows([f"Clause 7. {english.capitalize()}."], "e", ids=["en-doc"], clusters=[key_in("train", "e")])[0]
    zh_doc = doc_rows(["第一条　为了保护专利权人的合法权益，鼓励发明创造，推动发明创造的应用，制定本法。"], "z", ids=["zh-doc"],
                      clusters=[key_in("train", "z")])[0]
    write_norm_part(proj.root, "e", [en_doc, zh_doc, *doc_rows([article(i) for i in range(30)], "c")])
    m = run_stage("split", proj, gate=False)
    assert m["eval_task_items"] == 2 and m["eval_file_problems"] == {"missing_file": 1, "bad_json_line": 1}
    refs = {r["doc_id"]: r["ref_doc_id"] for r in read_ledger(proj.root / "data/splits/ledger").to_pylist()
            if r["action"] == "dropped"}
    assert refs == {"en-doc": "eval:evals/tasks.jsonl:q1", "zh-doc": "eval:evals/tasks.jsonl:3"}


def test_empty_input_writes_empty_splits(tmp_path):
    proj = make_project(tmp_path / "p", params())
    m = run_stage("split", proj, gate=False)
    assert m["documents_in"] == 0 == m["documents_out"]
    assert all((proj.root / "data/splits" / f"{s}.parquet").exists() for s in SPLITS)
    assert json.loads((proj.root / "data/splits/splits.json").read_text())["splits"]["train"]["documents"] == 0


def test_a_new_test_document_never_evicts_an_old_train_document(tmp_path):
    proj = make_project(tmp_path / "p", params())
    shared = "任何单位和个人不得侵占、挪用、截留或者私分依照本法规定应当用于公共事业的专项资金和物资"
    old = doc_rows([f"第十条　{shared}，并追究责任。"], "a", ids=["old-train"], clusters=[key_in("train", "r")])
    write_norm_part(proj.root, "a", old + doc_rows([article(i) for i in range(40)], "a"))
    run_stage("split", proj, gate=False)
    assert split_map(proj.root)["old-train"] == "train"

    new = doc_rows([f"第九条　{shared}，违者依法处理。"], "b", ids=["new-test"], clusters=[key_in("test", "t")])
    write_norm_part(proj.root, "b", new)
    m = run_stage("split", proj, gate=False)
    assert split_map(proj.root)["old-train"] == "train" and "new-test" not in split_map(proj.root)
    assert m["dropped"] == 1 and m["contaminated_eval_documents"] == 1 and m["contaminated_train_documents"] == 0
    row = next(r for r in read_ledger(proj.root / "data/splits/ledger").to_pylist() if r["action"] == "dropped")
    assert (row["doc_id"], row["ref_doc_id"]) == ("new-test", "old-train")


@pytest.mark.slow
def test_example_corpus_end_to_end_with_a_late_batch(tmp_path):
    """The real statutes: ingest -> dedup -> normalize -> split, then the 2020s batch arrives."""
    from vertical_dag_china_law.fetch import fetch_example

    root = tmp_path / "law"
    proj = make_project(root)
    (root / "params.yaml").write_text((Path(__file__).resolve().parents[1] / "params.yaml").read_text(encoding="utf-8"))
    fetch_example(root, hold_back={"2020s"}, with_model=False)
    for stage in ("ingest", "dedup", "normalize", "split"):
        m = run_stage(stage, proj, gate=False)
    before = split_map(root)
    assert m["documents_in"] == m["documents_out"] + m["dropped"] and len(before) == m["documents_out"]

    fetch_example(root, only={"2020s"}, with_model=False)
    metrics = {stage: run_stage(stage, proj, gate=False) for stage in ("ingest", "dedup", "normalize", "split")}
    after = split_map(root)
    assert all(after.get(d) == s for d, s in before.items())  # every old document kept its split
    for stage in ("normalize", "split"):
        m = metrics[stage]
        assert m["documents_in"] == m["documents_out"] + m["dropped"] + m["quarantined"]
    assert metrics["normalize"]["new_parts"] == 1
    assert metrics["normalize"]["documents_in"] == metrics["dedup"]["documents_out"]
    clusters: dict[str, set[str]] = {}
    for name in SPLITS:
        for row in pq.read_table(root / "data/splits" / f"{name}.parquet", columns=["cluster_id"]).to_pylist():
            clusters.setdefault(row["cluster_id"], set()).add(name)
    assert max(len(s) for s in clusters.values()) == 1
