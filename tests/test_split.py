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
    return next(f"{prefix}{i}" for i in range(start, start + 10_000) if assign(SEED, f"family={prefix}{i}", FRACTIONS) == split)


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
    assert keys == ["law_name=民法典", "law_name=民法典", "family=c", "family=d"]


# ---------------------------------------------------------------- template families (dedup_index)

FORM_WORDS = ("party notice term payment court claim damages breach agreement law right duty property lease "
              "tenant owner seller buyer goods service period written consent").split()


def words(seed: int, n: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(FORM_WORDS) + str(rng.randrange(100)) for _ in range(n))


def form_variants(form: int, n: int) -> list[str]:
    """Variants of one form: its 60 clause words plus 30 words of their own (Jaccard ~0.5 to each other:
    below dedup's 0.7, so all are kept)."""
    clauses = words(10_000 + form, 60)
    return [f"{clauses} {words(20_000 + 100 * form + v, 30)}" for v in range(n)]


def family_config():
    from vertical_dag.text.dedup_index import DedupConfig
    from vertical_dag.text.lsh import recall_bands

    bands, rows = recall_bands(0.3, 128)
    return DedupConfig(family_threshold=0.3, family_bands=bands, family_rows=rows)


def index_families(folder: Path, parts: list[list[str]], batch: int = 1000) -> list[int]:
    """The family founder (position in all documents) of every document, indexing `parts` one after another
    (the index saved and reloaded in between, as across runs)."""
    from vertical_dag.text.dedup_index import DedupIndex

    out: list[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    for k, texts in enumerate(parts):
        index = DedupIndex.load(folder, family_config()) if k else DedupIndex(folder, family_config())
        ids = [f"p{k}-{i}" for i in range(len(texts))]
        index.begin_part(f"p{k}", len(texts))
        for i in range(0, len(texts), batch):
            res = index.add_batch(texts[i : i + batch], ids[i : i + batch], lambda part, rows: [parts[part][r] for r in rows])
            out += res.family_id
        index.end_part()
        index.save()
    starts = [sum(len(t) for t in parts[:k]) for k in range(len(parts))]
    return [starts[int(f[1:].split("-")[0])] + int(f.split("-")[1]) for f in out]


def test_template_variants_form_one_family_whatever_the_batches(tmp_path):
    texts = form_variants(0, 8) + [words(i, 90) for i in range(10)] + form_variants(1, 6)
    texts.append(texts[3])  # an exact duplicate is in its original's family
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    texts = [texts[i] for i in order]
    families = index_families(tmp_path / "a", [texts])
    assert index_families(tmp_path / "b", [texts], batch=5) == families
    assert index_families(tmp_path / "c", [texts[:9], texts[9:]]) == families  # incremental == from scratch
    form_of = [0 if o < 8 or o == 24 else (1 if o >= 18 else None) for o in order]
    for form in (0, 1):
        members = [i for i, f in enumerate(form_of) if f == form]
        assert {families[i] for i in members} == {members[0]}  # one family, named after its first document
    others = [i for i, f in enumerate(form_of) if f is None]
    assert [families[i] for i in others] == others  # unrelated documents stand alone


def test_a_late_variant_joins_the_family_and_split_of_its_form(tmp_path):
    old = form_variants(0, 5) + [words(i, 90) for i in range(40)]
    new = form_variants(0, 8)[5:]
    families = index_families(tmp_path / "i", [old, new])
    assert families[:5] == [0] * 5 and families[45:] == [0] * 3 and families[5:45] == list(range(5, 45))
    assert index_families(tmp_path / "s", [old + new]) == families
    ids = [f"d{i}" for i in range(len(families))]
    keys = group_keys(ids, [None] * len(ids), [None] * len(ids), "family_id", [ids[f] for f in families])
    assert len({assign(SEED, k, FRACTIONS) for k in keys[:5] + keys[45:]}) == 1  # the new ones follow the old


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


def zh(seed: int, n: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(HAN) for _ in range(n))


def _contaminated_setup(root: Path) -> str:
    """A test document; a train document quoting a fifth of it (cut), one that is mostly a copy (dropped)."""
    test_text = zh(1001, 120)
    rows = doc_rows([f"第九条　{test_text}。"], "t", ids=["test-doc"], clusters=[key_in("test", "t")])
    rows += doc_rows([f"第十条　{zh(1002, 60)}，{test_text[:30]}，{zh(1003, 60)}。"], "t", ids=["quoting"],
                     clusters=[key_in("train", "r")])
    rows += doc_rows([f"第十一条　{test_text[10:]}，{zh(1004, 10)}。"], "t", ids=["copy"], clusters=[key_in("train", "s")])
    write_norm_part(root, "t", rows + doc_rows([article(i) for i in range(50)], "c"))
    return test_text


DECON = {"char_ngram": 20}


def test_decontamination_cuts_shared_spans_and_drops_near_copies(tmp_path):
    proj = make_project(tmp_path / "p", params(decontaminate=DECON))
    test_text = _contaminated_setup(proj.root)
    m = run_stage("split", proj, gate=False)
    assert m["dropped"] == 1 and m["drops_by_reason"] == {"contaminated": 1} and m["redacted"] == 1
    assert m["documents_in"] == 53 == m["documents_out"] + m["dropped"]
    assigned = split_map(proj.root)
    assert "copy" not in assigned and assigned["quoting"] == "train" and assigned["test-doc"] == "test"
    ledger = {(r["doc_id"], r["action"]): r for r in read_ledger(proj.root / "data/splits/ledger").to_pylist()}
    assert (ledger["copy", "dropped"]["reason"], ledger["copy", "dropped"]["ref_doc_id"]) == ("contaminated", "test-doc")
    cut = ledger["quoting", "redacted"]
    assert (cut["reason"], cut["ref_doc_id"]) == ("contaminated_span", "test-doc")
    detail = json.loads(cut["detail"])
    assert 0.15 < detail["coverage"] < 0.5 and detail["chars_cut"] == 30
    train = {r["doc_id"]: r for r in pq.read_table(proj.root / "data/splits/train.parquet").to_pylist()}
    assert test_text[:30] not in train["quoting"]["text"] and len(train["quoting"]["text"]) == 157 - 30 + 1
    test_rows = pq.read_table(proj.root / "data/splits/test.parquet").to_pylist()
    assert all(r["contamination"] == 0.0 for r in test_rows)  # nothing left in train overlaps the test split
    decon = m["decontamination"]
    assert (decon["cut"], decon["dropped"], decon["chars_cut"], decon["eval_docs_sharing_rare_ngrams"]) == (1, 1, 30, 0)
    assert {e["doc_id"]: e["outcome"] for e in decon["examples"]} == {"copy": "dropped", "quoting": "cut"}

    run_stage("split", proj, gate=False)  # a second run over the same data changes nothing
    again = {r["doc_id"]: r["text"] for r in pq.read_table(proj.root / "data/splits/train.parquet").to_pylist()}
    assert again == {d: r["text"] for d, r in train.items()}


def _split_outputs(root: Path) -> dict:
    files = sorted((root / "data/splits").glob("*.parquet")) + [root / "data/splits/ledger/split.parquet"]
    out = {f.name: pq.read_table(f).to_pylist() for f in files}
    out["splits.json"] = json.loads((root / "data/splits/splits.json").read_text())
    return out


def test_streaming_in_small_batches_writes_what_one_batch_does(tmp_path, monkeypatch):
    """Texts stream batch by batch and part by part: batches of 7 documents give the same files as one batch."""
    from vertical_dag.stages import split_io

    outputs = []
    for name, batch in (("one", 1 << 16), ("small", 7)):
        monkeypatch.setattr(split_io, "BATCH", batch)
        proj = make_project(tmp_path / name, params(decontaminate=DECON))
        _contaminated_setup(proj.root)
        write_norm_part(proj.root, "u", doc_rows([article(i) for i in range(100, 140)], "u", source="other"))
        m = run_stage("split", proj, gate=False)
        assert m["redacted"] == 1 and m["dropped"] == 1  # decontamination happened across batches
        assert not list((proj.root / "data").glob(".ngram-spill-*"))  # the n-gram spill is gone afterwards
        outputs.append(_split_outputs(proj.root))
    assert outputs[0] == outputs[1]


def test_the_gate_measures_the_same_from_the_stage_profile_as_from_the_texts(tmp_path):
    from vertical_dag.params import load_params
    from vertical_dag.quality.gate import validate_stage

    proj = make_project(tmp_path / "p", params(decontaminate=DECON))
    _contaminated_setup(proj.root)
    m = run_stage("split", proj, gate=False)
    p = load_params(proj.params_file)
    assert (proj.root / "data/splits/.profile/profile.json").exists()
    with_profile = validate_stage("split", proj, p, m)
    contamination = next(e for e in with_profile.expectations if e.name == "no_contamination")
    assert with_profile.success, with_profile.failure_message()
    assert contamination.observed["of"] == m["splits"]["validation"]["documents"] + m["splits"]["test"]["documents"]

    # a split file rewritten after the stage: the profile no longer describes it, the gate measures the texts
    test_file = proj.root / "data/splits/test.parquet"
    rows = pq.read_table(test_file)
    train_text = next(r["text"] for r in pq.read_table(proj.root / "data/splits/train.parquet").to_pylist()
                      if r["doc_id"] == "quoting")
    leaked = pa.Table.from_pylist([{**rows.to_pylist()[0], "doc_id": "leak", "text": train_text}], schema=rows.schema)
    write_parquet(pa.concat_tables([rows, leaked]), test_file)
    stale = validate_stage("split", proj, p, m)
    assert [e.name for e in stale.failed()] == ["no_contamination", "conservation"]
    [example] = next(e for e in stale.failed() if e.name == "no_contamination").observed["examples"]
    assert example["doc_id"] == "leak" and example["contamination"] == 1.0

    write_parquet(rows, test_file)  # back as the stage wrote it, but not by it: measured from the texts again
    again = validate_stage("split", proj, p, m)
    assert [(e.name, e.success, e.observed) for e in again.expectations] == \
        [(e.name, e.success, e.observed) for e in with_profile.expectations]


def test_boilerplate_shared_by_many_documents_is_not_contamination(tmp_path):
    clause = zh(1099, 40)  # a standard clause in 12 documents, some of them held out
    proj = make_project(tmp_path / "p", params(decontaminate={**DECON, "max_ngram_families": 5}))
    rows = doc_rows([f"第{i}条　{zh(1200 + i, 40)}，{clause}。" for i in range(12)], "b",
                    clusters=[key_in("test" if i < 3 else "train", "b", 100 * i) for i in range(12)])
    write_norm_part(proj.root, "b", rows + doc_rows([article(i) for i in range(30)], "c"))
    m = run_stage("split", proj, gate=False)
    assert m["dropped"] == 0 and m["redacted"] == 0 and m["decontamination"]["boilerplate_ngrams"] >= 21

    proj2 = make_project(tmp_path / "q", params(decontaminate={**DECON, "max_ngram_families": 0}))  # every n-gram counts
    write_norm_part(proj2.root, "b", rows + doc_rows([article(i) for i in range(30)], "c"))
    m2 = run_stage("split", proj2, gate=False)
    assert (m2["redacted"], m2["dropped"]) == (9, 0)  # the clause (under half of each train document) is cut


def test_decontamination_can_flag_instead(tmp_path):
    proj = make_project(tmp_path / "p", params(decontaminate={**DECON, "action": "flagged"}))
    _contaminated_setup(proj.root)
    m = run_stage("split", proj, gate=False)
    assert m["dropped"] == 0 and m["flagged"] == 1 and m["documents_out"] == 53
    train = {r["doc_id"]: r for r in pq.read_table(proj.root / "data/splits/train.parquet").to_pylist()}
    assert train["copy"]["contaminated"] and train["copy"]["contamination"] > 0
    assert not train["quoting"]["contaminated"]  # below min_coverage: flag mode leaves it alone
    flagged = [r for r in read_ledger(proj.root / "data/splits/ledger").to_pylist() if r["action"] == "flagged"]
    assert [(r["doc_id"], r["ref_doc_id"]) for r in flagged] == [("copy", "test-doc")]
    test_row = next(r for r in pq.read_table(proj.root / "data/splits/test.parquet").to_pylist() if r["doc_id"] == "test-doc")
    assert test_row["contamination"] > 0  # the gate can see the overlap that was kept


def test_decontamination_against_evaluation_task_files(tmp_path):
    english = ("the contractor shall indemnify and hold harmless the owner against all claims arising from "
               "negligent performance of the work under this agreement")
    proj = make_project(tmp_path / "p", params(decontaminate={
        "extra_eval_files": ["evals/tasks.jsonl"], "char_ngram": 20, "internal": False}))
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
    assert m["eval_task_items"] == 2 and m["eval_file_problems"] == {"bad_json_line": 1}
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
    proj = make_project(tmp_path / "p", params(decontaminate=DECON))
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


def test_a_missing_evaluation_file_is_an_error(tmp_path):
    """A file the user named for decontamination must exist: silently covering less is worse than stopping."""
    from vertical_dag.params import ParamsError

    proj = make_project(tmp_path / "p", params(decontaminate={"extra_eval_files": ["evals/missing.jsonl"]}))
    write_norm_part(proj.root, "e", doc_rows([article(i) for i in range(5)], "c"))
    with pytest.raises(ParamsError, match="split.decontaminate.extra_eval_files = 'evals/missing.jsonl'"):
        run_stage("split", proj, gate=False)
    assert not (proj.root / "data/splits").exists()


def test_splits_folder_loads_as_a_hugging_face_dataset(tmp_path):
    import datasets
    from huggingface_hub import DatasetCard

    proj = make_project(tmp_path / "p", params(decontaminate=DECON))
    _contaminated_setup(proj.root)
    m = run_stage("split", proj, gate=False)
    folder = proj.root / "data/splits"
    assert (folder / ".state.json").exists() and (folder / "ledger/split.parquet").exists()  # beside the data
    ds = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf"))
    assert {name: ds[name].num_rows for name in ds} == {s: m["splits"][s]["documents"] for s in SPLITS}
    assert "copy" not in ds["train"]["doc_id"] and set(ds["test"]["split"]) == {"test"}
    card = DatasetCard.load(folder / "README.md")
    configs = card.data.to_dict()["configs"]
    assert configs == [{"config_name": "default", "data_files": [{"split": s, "path": f"{s}.parquet"} for s in SPLITS]}]
    assert f"| train | {m['splits']['train']['documents']} |" in card.text
    assert "dropped 1 documents" in card.text and "out of 1 and flagged 0" in card.text


def test_decontamination_presets_follow_the_domain_and_params_win(tmp_path):
    from typing import get_args

    from vertical_dag.params import DecontaminateParams, ProjectParams
    from vertical_dag.text.decontaminate import PRESETS, resolve_settings

    domains = set(get_args(ProjectParams.model_fields["domain"].annotation))
    assert set(PRESETS) == domains == set(get_args(DecontaminateParams.model_fields["preset"].annotation)) - {"auto"}
    assert resolve_settings("legal")["char_ngram"] == 50 and resolve_settings("general")["char_ngram"] == 25
    assert resolve_settings("legal", {"min_coverage": 0.8, "char_ngram": None}) == {**PRESETS["legal"], "min_coverage": 0.8}
    with pytest.raises(ValueError, match="unknown decontamination preset 'poetry'"):
        resolve_settings("poetry")
    proj = make_project(tmp_path / "p", params(decontaminate={"max_ngram_families": 3}))  # project.domain: legal
    write_norm_part(proj.root, "c", doc_rows([article(i) for i in range(20)], "c"))
    m = run_stage("split", proj, gate=False)
    assert m["decontamination"]["settings"] == {"preset": "legal", **PRESETS["legal"], "max_ngram_families": 3}
