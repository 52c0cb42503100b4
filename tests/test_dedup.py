"""Deduplication: canonical form, script-aware shingles, MinHash/LSH, verification, the incremental index,
the ledger and `vertical-dag explain`."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vertical_dag.params import ParamsError, parse_params
from vertical_dag.project import Project
from vertical_dag.records import DOC_SCHEMA, make_doc_id, read_ledger, read_parts
from vertical_dag.stages.context import run_stage
from vertical_dag.text.canonical import canonical_hash, canonical_text
from vertical_dag.text.dedup_index import EXACT, KEEP, NEAR, DedupConfig, DedupIndex
from vertical_dag.text.lsh import recall_bands
from vertical_dag.text.minhash import MinHasher, estimated_jaccard, exact_jaccard
from vertical_dag.text.shingles import shingle_hashes, shingle_set

from .conftest import REPO, run_cli

LAW = ("第一条　为了规范仲裁行为，保证公正、及时地仲裁经济纠纷，保护当事人的合法权益，保障社会主义市场经济健康发展，"
       "根据宪法，制定本法。当事人采用仲裁方式解决纠纷，应当双方自愿，达成仲裁协议。没有仲裁协议，一方申请仲裁的，"
       "仲裁委员会不予受理。")
ENGLISH = ("The tenant shall keep the premises in good repair and shall not make any alteration to the structure "
           "without the prior written consent of the landlord, which consent shall not be unreasonably withheld "
           "or delayed, and shall return the premises at the end of the term in the same condition.")
HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
WORDS = ("contract party notice term payment court claim damages breach agreement law right duty property "
         "lease tenant owner seller buyer goods service period written consent").split()


def zh(seed: int, n: int = 120) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(HAN) for _ in range(n))


def en(seed: int, n: int = 60) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(n))


def substitute(text: str, positions: list[int], repl: str = "甲") -> str:
    chars = list(text)
    for p in positions:
        chars[p] = repl
    return "".join(chars)


def run_index(texts: list[str], config: DedupConfig | None = None, folder: Path | None = None, batch: int = 1000,
              background: bool = False):
    import tempfile

    config = config or DedupConfig()
    folder = Path(folder or tempfile.mkdtemp())
    index = DedupIndex(folder, config, background)
    index.begin_part("p", len(texts))
    results = [index.add_batch(texts[i : i + batch], [f"d{j}" for j in range(i, i + len(texts[i : i + batch]))],
                               lambda k, rows: [texts[r] for r in rows]) for i in range(0, len(texts), batch)]
    index.end_part()
    return np.concatenate([r.action for r in results]), np.concatenate([r.root for r in results]), results


# ---------------------------------------------------------------- library


def test_canonical_form_folds_width_case_and_spaces():
    variants = ["Ｈｅｌｌｏ　ＷＯＲＬＤ，２０２４", "hello world,2024", "  HELLO \t\n world,2024\u200b ", "Hello World,2024"]
    assert len({canonical_text(v) for v in variants}) == 1
    assert len({canonical_hash(canonical_text(v)) for v in variants}) == 1
    assert canonical_text("hello world") != canonical_text("hello  worlds")


def test_shingles_are_script_aware():
    # Chinese: character n-grams, so one changed character leaves most shingles shared
    a, b = shingle_set(canonical_text(LAW), 5), shingle_set(canonical_text(substitute(LAW, [40])), 5)
    assert exact_jaccard(a, b) > 0.9
    # English: word n-grams (60 words -> 58 trigrams before de-duplication)
    hashes, offsets = shingle_hashes([canonical_text(en(1))], 5, 3)
    assert offsets[-1] == 58
    # mixed: a CJK run of 11 chars (7 five-grams) + 4 words (2 trigrams) + a 2-char run (one short shingle)
    hashes, offsets = shingle_hashes([canonical_text("中华人民共和国宪法规定 alpha beta gamma delta 本法")], 5, 3)
    assert offsets[-1] == 7 + 2 + 1
    # empty and punctuation-only texts have no shingles; batches are computed per document
    hashes, offsets = shingle_hashes(["", "!!!", canonical_text(ENGLISH)], 5, 3)
    assert list(np.diff(offsets)[:2]) == [0, 0] and np.diff(offsets)[2] > 30


def test_character_shingles_for_space_separated_scripts():
    """A typo spoils ngram_words word n-grams (~18 characters of text) but only ~5 character 5-grams, so
    character shingles keep OCR-like copies above the threshold; CJK text shingles alike either way."""
    a, b = canonical_text(ENGLISH), canonical_text(ENGLISH.replace("premises", "prem1ses", 1).replace("structure", "strncture"))
    chars = exact_jaccard(shingle_set(a, 5, 3, 5), shingle_set(b, 5, 3, 5))
    words = exact_jaccard(shingle_set(a, 5, 3, 0), shingle_set(b, 5, 3, 0))
    assert chars > 0.9 > 0.85 > words
    # punctuation and runs of spaces read as one space; case was folded by the canonical form
    assert (shingle_set("hello, world", 5, 3, 5) == shingle_set("hello  world", 5, 3, 5)).all()
    assert not np.isin(shingle_set("hello world", 5, 3, 5), shingle_set("helloworld", 5, 3, 5)).all()
    law = canonical_text(LAW)
    assert (shingle_hashes([law], 5, 3, 5)[0] == shingle_hashes([law], 5, 3, 0)[0]).all()
    # mixed: a CJK run of 11 chars (7 five-grams) + "alpha beta" (10 characters: 6) + a 2-char run (one short)
    assert shingle_hashes(["中华人民共和国宪法规定 alpha beta 本法"], 5, 3, 5)[1][-1] == 7 + 6 + 1
    assert list(shingle_hashes(["", "!!!", "ab"], 5, 3, 5)[1]) == [0, 0, 0, 1]


def test_heavily_duplicated_input_costs_a_bounded_number_of_checks():
    """300 edited copies of one text (and unrelated texts between them): every copy joins the first one's
    cluster, and exact-Jaccard checks stay at most max_verify per document, about one per copy, since the
    best-ranked candidate is already a match (before, every candidate above the margin was checked)."""
    rng = random.Random(0)
    base = zh(7, 300)
    texts = []
    for k in range(300):
        texts += [substitute(base, rng.sample(range(300), 4), "乙") if k else base, zh(1000 + k)]
    for cfg, per_doc in ((DedupConfig(), 1.2), (DedupConfig(max_verify=1), 1.0)):
        action, root, results = run_index(texts, cfg, batch=64)
        assert (action[2::2] == NEAR).all() and (root[::2] == 0).all() and (action[1::2] == KEEP).all()
        checks = sum(r.checks for r in results)
        assert 299 <= checks <= per_doc * 299, checks


def test_batch_signatures_match_single_documents_and_estimate_jaccard():
    texts = [canonical_text(t) for t in (LAW, ENGLISH, zh(3, 2000), "", en(4))]
    h, off = shingle_hashes(texts, 5, 3)
    hasher = MinHasher(128, seed=7, block=4096)  # a small block forces the split path for the long document
    batch = hasher.signatures(h, off)
    for i, t in enumerate(texts):
        hi, oi = shingle_hashes([t], 5, 3)
        assert (hasher.signatures(hi, oi)[0] == batch[i]).all()
    near = canonical_text(substitute(LAW, [10, 50, 90]))
    hn, on = shingle_hashes([near], 5, 3)
    est = estimated_jaccard(batch[0], hasher.signatures(hn, on)[0])
    true = exact_jaccard(shingle_set(texts[0]), shingle_set(near))
    assert abs(est - true) < 0.15


def test_chinese_near_duplicates_differing_by_a_few_characters_are_caught():
    texts = [LAW, substitute(LAW, [12, 47, 95]), zh(1), substitute(zh(1), [5, 60]), zh(2), LAW[:40] + zh(9, 60)]
    action, root, results = run_index(texts, DedupConfig(ngram_cjk=5))
    assert list(action) == [KEEP, NEAR, KEEP, NEAR, KEEP, KEEP]
    assert root[1] == 0 and root[3] == 2
    assert results[0].verified[1] >= 0.7 and results[0].est[1] > 0.5


def test_english_and_mixed_near_duplicates():
    edited = ENGLISH.replace("good repair", "good order")
    mixed = "本合同条款 " + ENGLISH + " 由双方签字后生效"
    texts = [ENGLISH, edited, mixed, en(5), en(6)]
    action, root, _ = run_index(texts)
    assert list(action) == [KEEP, NEAR, NEAR, KEEP, KEEP]
    assert list(root[:3]) == [0, 0, 0]


def test_exact_duplicates_by_canonical_form_and_chains_join_the_first_cluster():
    base, other = zh(11), zh(12)
    step1 = substitute(base, [20, 40, 60])  # ~0.77 to base
    step2 = substitute(step1, [80, 100, 110], "乙")  # ~0.77 to step1, ~0.59 to base
    texts = [base, "Hello World " + other, "ＨＥＬＬＯ　ｗｏｒｌｄ " + other, "  hello\tworld\n" + other, step1, step2]
    action, root, results = run_index(texts)
    assert list(action) == [KEEP, KEEP, EXACT, EXACT, NEAR, NEAR]
    assert list(root) == [0, 1, 1, 1, 0, 0]
    assert results[0].match[5] == 4 and results[0].root_id[5] == "d0" and results[0].match_id[5] == "d4"


def test_verification_removes_a_false_positive():
    """With few permutations the MinHash estimate of a pair below the threshold often lands above it;
    exact verification must reject exactly those pairs."""
    a = zh(21, 200)
    b = a[:120] + zh(22, 80)  # true Jaccard of 5-gram sets ~ 0.4
    true = exact_jaccard(shingle_set(canonical_text(a)), shingle_set(canonical_text(b)))
    assert true < 0.6
    for seed in range(300):
        cfg = DedupConfig(num_perm=16, bands=16, rows=1, threshold=0.6, verify=False, seed=seed)
        if run_index([a, b], cfg)[0][1] == NEAR:
            break
    else:
        pytest.fail("no seed gave a false positive estimate")
    action, _, results = run_index([a, b], DedupConfig(**{**cfg.fingerprint(), "verify": True}))
    assert action[1] == KEEP


def test_decisions_do_not_depend_on_batch_boundaries():
    texts = []
    for i in range(40):
        t = zh(100 + i)
        texts += [t, substitute(t, [i % 100, 110]), zh(500 + i)]
    texts.append(texts[0])
    a1, r1, _ = run_index(texts, batch=1000)
    a2, r2, _ = run_index(texts, batch=7)
    a3, r3, _ = run_index(texts, batch=7, background=True)  # segments merged on a thread meanwhile
    assert (a1 == a2).all() and (r1 == r2).all()
    assert (a1 == a3).all() and (r1 == r3).all()
    assert (a1 == NEAR).sum() == 40 and (a1 == EXACT).sum() == 1


def test_params_validate_bands_and_rows():
    with pytest.raises(ParamsError, match="must not exceed num_perm"):
        parse_params({"dedup": {"num_perm": 64, "bands": 20, "rows": 4}})
    with pytest.raises(ParamsError, match="both bands and rows"):
        parse_params({"dedup": {"bands": 20}})
    assert parse_params({"dedup": {"num_perm": 64, "bands": 16, "rows": 4}}).dedup.bands == 16
    b, r = recall_bands(0.7, 128)
    assert b * r <= 128 and 1 - (1 - 0.7**r) ** b >= 0.97


# ---------------------------------------------------------------- the stage


def write_part(root: Path, name: str, texts: list[str], source: str = "src") -> list[str]:
    ids = [make_doc_id(source, f"{name}:{i}") for i in range(len(texts))]
    table = pa.table({"doc_id": ids, "source": [source] * len(texts), "uri": [f"{name}#{i}" for i in range(len(texts))],
                      "batch": [name] * len(texts), "text": texts, "lang": ["zh"] * len(texts),
                      "meta": ["{}"] * len(texts)}, schema=DOC_SCHEMA)
    path = root / "data" / "ingested" / "parts" / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return ids


def batches() -> dict[str, list[str]]:
    a = [zh(i) for i in range(30)] + [en(i) for i in range(10)]
    b = [substitute(a[i], [i, 70]) for i in range(10)] + [zh(200 + i) for i in range(20)] + [a[0], a[35]]
    c = [substitute(b[12], [3]), b[12], zh(300), zh(300), en(3) + " extra words here"] + [zh(400 + i) for i in range(15)]
    return {"b1": a, "b2": b, "b3": c}


def kept_and_ledger(root: Path) -> tuple[set[str], dict[str, tuple]]:
    kept = set(read_parts(root / "data/deduplicated/parts", columns=["doc_id"])["doc_id"].to_pylist())
    led = read_ledger(root / "data/deduplicated/ledger").to_pylist()
    return kept, {r["doc_id"]: (r["reason"], r["ref_doc_id"]) for r in led}


def test_incremental_runs_equal_a_from_scratch_run(project: Path, tmp_path: Path):
    data = batches()
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("batch_size: 10000", "batch_size: 8"))
    n_seen = 0
    for name, texts in data.items():
        write_part(project, name, texts)
        m = run_stage("dedup", Project(project), gate=False)
        n_seen += len(texts)
        assert m["new_parts"] == 1 and m["new_documents"] == len(texts) and m["rebuilt"] is None
        assert m["documents_in"] == n_seen == m["documents_out"] + m["dropped"]  # conservation
    inc = kept_and_ledger(project)
    # nothing new: nothing processed, nothing changed
    again = run_stage("dedup", Project(project), gate=False)
    assert again["new_parts"] == 0 and kept_and_ledger(project) == inc

    scratch = tmp_path / "scratch"
    shutil.copytree(project, scratch, ignore=shutil.ignore_patterns("deduplicated"))
    m = run_stage("dedup", Project(scratch), gate=False)
    assert m["new_parts"] == 3
    assert kept_and_ledger(scratch) == inc
    kept, ledger = inc
    assert m["drops_by_reason"] == {"exact_duplicate": 4, "near_duplicate": 12}
    assert sum(1 for r, _ in ledger.values() if r == "near_duplicate") == 12
    assert kept.isdisjoint(ledger) and all(ref in kept for _, ref in ledger.values())
    # the near duplicate of a near duplicate (b3[0] ~ b2[12]) points at the kept document
    ids = {n: [make_doc_id("src", f"{n}:{i}") for i in range(len(t))] for n, t in data.items()}
    assert ledger[ids["b3"][0]] == ("near_duplicate", ids["b2"][12])
    assert ledger[ids["b2"][0]] == ("near_duplicate", ids["b1"][0])
    assert ledger[ids["b2"][30]] == ("exact_duplicate", ids["b1"][0])
    assert m["largest_cluster"] == 3 and m["duplicate_rate_by_source"]["src"] == round(16 / 92, 4)


def test_changed_or_vanished_old_part_rebuilds_from_scratch(project: Path, caplog):
    data = batches()
    write_part(project, "b1", data["b1"])
    write_part(project, "b2", data["b2"])
    run_stage("dedup", Project(project), gate=False)
    write_part(project, "b1", data["b1"][:-5])  # an old batch changed
    with caplog.at_level("WARNING"):
        m = run_stage("dedup", Project(project), gate=False)
    assert "rebuilding from scratch: input part b1 changed" in caplog.text
    assert m["rebuilt"] == "input part b1 changed" and m["new_parts"] == 2
    assert m["documents_in"] == len(data["b1"]) - 5 + len(data["b2"]) == m["documents_out"] + m["dropped"]
    (project / "data/ingested/parts/b1.parquet").unlink()
    m = run_stage("dedup", Project(project), gate=False)
    assert m["rebuilt"] == "input part b1 vanished" and m["documents_in"] == len(data["b2"])
    assert not (project / "data/deduplicated/parts/b1.parquet").exists()
    kept, ledger = kept_and_ledger(project)
    assert len(kept) + len(ledger) == len(data["b2"])


def test_outputs_ledger_explain_and_gate(project: Path):
    near = substitute(LAW, [12, 47, 95])
    ids = write_part(project, "p1", [LAW, "Ｈello  World", near, "hello world", ENGLISH])
    run_cli("run", "dedup", cwd=project)  # with its quality gate
    out = pq.read_table(project / "data/deduplicated/parts/p1.parquet")
    assert out.column("doc_id").to_pylist() == [ids[0], ids[1], ids[4]]
    assert out.column("cluster_id").to_pylist() == [ids[0], ids[1], ids[4]]
    assert len(set(out.column("canonical_hash").to_pylist())) == 3
    led = {r["doc_id"]: r for r in read_ledger(project / "data/deduplicated/ledger").to_pylist()}
    assert led[ids[2]]["reason"] == "near_duplicate" and led[ids[2]]["ref_doc_id"] == ids[0]
    detail = json.loads(led[ids[2]]["detail"])
    assert 0.5 < detail["est_jaccard"] <= 1 and detail["verified_jaccard"] >= 0.7
    assert led[ids[3]]["reason"] == "exact_duplicate" and led[ids[3]]["ref_doc_id"] == ids[1]
    metrics = json.loads((project / "data/metrics/dedup.json").read_text())
    assert metrics["exact_duplicates"] == 1 and metrics["near_duplicates"] == 1 and metrics["clusters"] == 2
    assert json.loads((project / "data/gates/dedup.json").read_text())["success"] is True
    text = run_cli("explain", ids[2], cwd=project).stdout
    assert "near_duplicate" in text and ids[0] in text and "verified_jaccard" in text
    assert f"kept as the reference for {ids[2]}" in run_cli("explain", ids[0], cwd=project).stdout


def test_empty_input_and_disabled(project: Path):
    m = run_stage("dedup", Project(project), gate=False)
    assert m["documents_in"] == 0 and m["new_parts"] == 0
    write_part(project, "p", [LAW, LAW])
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("  enabled: true            # false: keep", "  enabled: false  # keep"))
    m = run_stage("dedup", Project(project), gate=False)
    assert m["documents_out"] == 2 and m["dropped"] == 0


@pytest.mark.slow
def test_example_law_versions_and_incremental_batch(project: Path, tmp_path: Path):
    """The Chinese-law example: historical and current versions of a law are near duplicates (the earlier
    batch's article is kept, the ledger names it); the 2020s batch arriving later is deduplicated alone
    against everything before and gives the same kept set as a from-scratch run over all batches."""
    shutil.copy(REPO / "params.yaml", project / "params.yaml")
    run_cli("example", "fetch", "--no-model", "--hold-back", "2020s", cwd=project)
    run_cli("run", "ingest", cwd=project)
    first = json.loads(run_cli("run", "dedup", "--json", cwd=project).stdout)
    run_cli("example", "fetch", "--no-model", "--batch", "2020s", cwd=project)
    run_cli("run", "ingest", cwd=project)
    second = json.loads(run_cli("run", "dedup", "--json", cwd=project).stdout)
    assert second["new_parts"] == 1 and second["new_documents"] == 14084 and second["rebuilt"] is None
    assert second["documents_in"] == 26196 == second["documents_out"] + second["dropped"]
    assert first["near_duplicates"] > 0 and second["near_duplicates"] > first["near_duplicates"]

    docs = read_parts(project / "data/ingested/parts", columns=["doc_id", "meta"]).to_pylist()
    meta = {d["doc_id"]: json.loads(d["meta"]) for d in docs}
    ledger = read_ledger(project / "data/deduplicated/ledger").to_pylist()
    versions = [r for r in ledger if r["reason"] == "near_duplicate"
                and meta[r["doc_id"]]["law_name"] == meta[r["ref_doc_id"]]["law_name"]
                and meta[r["doc_id"]]["status"] != meta[r["ref_doc_id"]]["status"]]
    constitution = [r for r in versions if meta[r["doc_id"]]["law_name"] == "中华人民共和国宪法"]
    assert constitution, "the 1982 and 2018 constitutions share near-duplicate articles"
    r = constitution[0]
    assert meta[r["ref_doc_id"]]["status"] == "历史版本" and meta[r["doc_id"]]["status"] == "现行有效"
    assert json.loads(r["detail"])["verified_jaccard"] >= 0.7
    text = run_cli("explain", r["doc_id"], cwd=project).stdout
    assert "near_duplicate" in text and r["ref_doc_id"] in text

    scratch = tmp_path / "scratch"
    shutil.copytree(project, scratch, ignore=shutil.ignore_patterns("deduplicated"))
    again = json.loads(run_cli("run", "dedup", "--json", cwd=scratch).stdout)
    assert again["new_parts"] == 7 and again["dropped"] == second["dropped"]
    assert kept_and_ledger(scratch) == kept_and_ledger(project)
