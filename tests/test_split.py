"""Splits: stable hash assignment by group, template families, clusters never straddle splits, incremental
runs, the example end to end (decontamination: test_split_decontamination.py)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from vertical_dag.records import DOC_SCHEMA, read_ledger, write_parquet
from vertical_dag.stages.context import run_stage
from vertical_dag.stages.split_io import SplitWriters
from vertical_dag.text.overlap import Side
from vertical_dag.text.splitting import SPLITS, assign, assign_column, distinct_count, group_keys

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


@pytest.mark.parametrize("fractions", [FRACTIONS, (0.0, 0.5, 0.5), (0.5, 0.5, 0.0), (0.3, 0.0, 0.3), (0.5, 0.2, 0.0)])
def test_assign_column_is_assign_for_every_key(fractions):
    # keys repeated, non-ASCII keys, zero fractions, and fractions summing below 1 (assign's fallback split)
    keys = [f"k{i}" for i in range(5000)] + ["law_name=民法典", "k7", "family=é"] * 3
    got = assign_column(SEED, pa.chunked_array([pa.array(keys[:2000]), pa.array(keys[2000:])]), fractions)
    assert [SPLITS[c] for c in got.tolist()] == [assign(SEED, k, fractions) for k in keys]


def test_assign_column_hashed_in_chunks_on_a_pool_of_workers_is_the_same(monkeypatch):
    from vertical_dag.stages.executor import LocalPool
    from vertical_dag.text import splitting

    keys = pa.array([f"k{i}" for i in range(3000)] + ["law_name=民法典"] * 5)
    here = assign_column(SEED, keys, FRACTIONS)
    monkeypatch.setattr(splitting, "HASH_CHUNK", 700)  # five chunks, the last one short
    pool = LocalPool(2)
    try:
        assert (assign_column(SEED, keys, FRACTIONS, pool.map) == here).all()
    finally:
        pool.close()


def test_distinct_count_counts_values_not_nulls_across_chunks():
    keys = pa.chunked_array([pa.array(["a", "b", None]), pa.array(["b", "民法典", None]), pa.array([], pa.string())])
    assert distinct_count(keys) == 3 == pc.count_distinct(keys).as_py()
    assert distinct_count(pa.array([], pa.string())) == 0 == distinct_count(pa.chunked_array([], pa.string()))


def test_a_side_keeps_each_hash_with_its_smallest_owner():
    """Side.built sorts unstably; what it keeps must be what a stable sort by (hash, owner) puts first,
    whether the owners come in ascending order (Side.of) or not."""
    rng = np.random.default_rng(7)
    for n, distinct in ((0, 1), (1, 1), (5000, 300), (100_000, 20_000)):
        hashes = rng.integers(0, 2**64 - 1, distinct, dtype=np.uint64)[rng.integers(0, distinct, n)]
        ascending = np.sort(rng.integers(0, 400, n)).astype(np.int32)
        for owner, is_ascending in ((ascending, True), (rng.permutation(ascending), False)):
            side = Side.built(hashes, owner, owner_ascending=is_ascending)
            order = np.lexsort((owner, hashes))
            h = hashes[order]
            first = np.r_[True, h[1:] != h[:-1]] if n else np.zeros(0, bool)
            assert side.hashes.tolist() == h[first].tolist()
            assert side.owner.tolist() == owner[order[first]].tolist() and side.owner.dtype == owner.dtype
    arrays = [np.array([5, 3], np.uint64), np.array([3, 9], np.uint64), np.array([9, 1], np.uint64)]
    side = Side.of(arrays)
    assert side.hashes.tolist() == [1, 3, 5, 9] and side.owner.tolist() == [2, 0, 0, 1]


def test_a_large_side_built_a_hash_range_at_a_time_equals_one_lexsort():
    """Side.built of a large side (a hash range at a time, on one thread or several) gives each distinct hash
    with its smallest owner, as a lexsort by (hash, owner) does: with owners ascending or not, equal hashes in
    several documents, and hashes at both ends of the range."""
    from vertical_dag.text.overlap import RANGED_ROWS

    rng = np.random.default_rng(5)
    n = RANGED_ROWS + 12_345
    hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    pairs = len(hashes[1::4])
    hashes[::4][:pairs] = hashes[1::4]  # each shared by two rows
    hashes[:3] = [0, 2**63, 2**64 - 1]
    ascending = np.sort(rng.integers(0, 50_000, n)).astype(np.int32)
    for owner, flag in ((ascending, True), (rng.permutation(ascending), False)):
        order = np.lexsort((owner, hashes))
        h = hashes[order]
        first = np.r_[True, h[1:] != h[:-1]]
        assert first.sum() < n
        for threads in (1, 2, 3):
            got = Side.built(hashes, owner, owner_ascending=flag, threads=threads)
            assert np.array_equal(got.hashes, h[first]) and np.array_equal(got.owner, owner[order][first])


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


def test_empty_input_writes_empty_splits(tmp_path):
    proj = make_project(tmp_path / "p", params())
    m = run_stage("split", proj, gate=False)
    assert m["documents_in"] == 0 == m["documents_out"]
    assert all((proj.root / "data/splits" / f"{s}.parquet").exists() for s in SPLITS)
    assert json.loads((proj.root / "data/splits/splits.json").read_text())["splits"]["train"]["documents"] == 0


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


def test_split_files_written_on_threads_are_the_same_bytes_and_none_is_kept_on_a_failed_write(tmp_path):
    """SplitWriters with a thread per file (what split does with more than one worker) writes each file's
    batches in order, so its files equal one thread's; a write that fails replaces no file."""
    schema = pa.schema([("doc_id", pa.string()), ("text", pa.string())])
    rng = random.Random(3)
    batches = [(rng.choice(SPLITS), pa.table({"doc_id": [f"d{b}-{i}" for i in range(50)],
                                              "text": ["".join(rng.choices("abc 法律", k=80)) for _ in range(50)]},
                                             schema=schema)) for b in range(40)]
    for threaded in (False, True):
        with SplitWriters(tmp_path / str(threaded), SPLITS, schema, threaded) as writers:
            for name, table in batches:
                writers.write(name, table)
    for name in SPLITS:
        assert (tmp_path / "True" / f"{name}.parquet").read_bytes() == (tmp_path / "False" / f"{name}.parquet").read_bytes()
        assert pq.read_table(tmp_path / "True" / f"{name}.parquet").num_rows == 50 * sum(n == name for n, _ in batches)

    wrong = pa.table({"doc_id": ["x"], "text": [b"\xff"]})  # binary that is not UTF-8: the cast fails
    with pytest.raises(pa.ArrowException):
        with SplitWriters(tmp_path / "failed", SPLITS, schema, threaded=True) as writers:
            writers.write("train", batches[0][1])
            writers.write("train", wrong)
    assert not list((tmp_path / "failed").glob("*.parquet"))
