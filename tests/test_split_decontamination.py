"""Split: decontamination against the evaluation side and task files, the split gate's contamination measure
from the stage profile, streaming in small batches, and the splits folder as a Hugging Face dataset."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vertical_dag.records import read_ledger, write_parquet
from vertical_dag.stages.context import run_stage
from vertical_dag.text.splitting import SPLITS

from .test_normalize import doc_rows, make_project
from .test_split import HAN, article, key_in, params, split_map, write_norm_part


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


def test_a_missing_evaluation_file_is_an_error(tmp_path):
    """A file the user named for decontamination must exist: silently covering less is worse than stopping."""
    from vertical_dag.params import ParamsError

    proj = make_project(tmp_path / "p", params(decontaminate={"extra_eval_files": ["evals/missing.jsonl"]}))
    write_norm_part(proj.root, "e", doc_rows([article(i) for i in range(5)], "c"))
    with pytest.raises(ParamsError, match="split.decontaminate.extra_eval_files = 'evals/missing.jsonl'"):
        run_stage("split", proj, gate=False)
    assert not (proj.root / "data/splits").exists()


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


@pytest.mark.parametrize("workers", [1, 2])  # 2: the old training texts are hashed on a process pool
def test_a_new_test_document_never_evicts_an_old_train_document(tmp_path, workers):
    proj = make_project(tmp_path / "p", {**params(decontaminate=DECON), "execution": {"workers": workers}})
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
    assert m["workers"] == workers
    row = next(r for r in read_ledger(proj.root / "data/splits/ledger").to_pylist() if r["action"] == "dropped")
    assert (row["doc_id"], row["ref_doc_id"]) == ("new-test", "old-train")


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


def test_membership_through_the_filter_table_is_exact() -> None:
    """hash_spill.member answers many queries through a filter table first, or (a set too large for one) in
    sorted order: the same mask as np.isin, for keys at the ends of the range, keys differing only in low
    or high bits, and sets of every size."""
    import numpy as np

    from vertical_dag.text.hash_spill import PREFILTER_MIN, member

    rng = np.random.default_rng(7)
    for set_size, extra in [(1, 0), (100, 0), (30_000, 2 * 30_000), (200_000, 0), (200_000, 2 * 200_000)]:
        keys = rng.integers(0, 2**64 - 1, set_size, dtype=np.uint64, endpoint=True)
        keys[:1] = [np.uint64(2**64 - 1)]
        present = rng.choice(keys, PREFILTER_MIN)
        near = keys[: min(set_size, 1000)] ^ np.uint64(1)  # one low bit off
        far = keys[: min(set_size, 1000)] ^ np.uint64(1 << 63)  # the top bit off
        queries = np.concatenate([present, near, far, np.zeros(5, np.uint64),
                                  rng.integers(0, 2**64 - 1, extra, dtype=np.uint64)])
        rng.shuffle(queries)
        sorted_set = np.unique(keys)
        got = member(queries, sorted_set)
        assert len(queries) >= PREFILTER_MIN and got.sum() >= PREFILTER_MIN
        assert np.array_equal(got, np.isin(queries, sorted_set))


def test_shared_fractions_in_chunks_equal_one_lookup_per_document():
    import numpy as np

    from vertical_dag.text.overlap import shared_fraction, shared_fractions

    rng = np.random.default_rng(11)
    other = np.sort(rng.integers(0, 2**62, 200_000, dtype=np.uint64))
    owns = []
    for _ in range(3000):
        x = rng.integers(0, 2**62, int(rng.integers(0, 40)), dtype=np.uint64)
        shared = rng.random(len(x)) < rng.random()
        x[shared] = other[rng.integers(0, len(other), int(shared.sum()))]
        owns.append(np.unique(x))
    want = [shared_fraction(o, other) for o in owns]
    assert 0.0 in want and any(0 < w < 1 for w in want) and sum(len(o) == 0 for o in owns) > 10
    for chunk in (1, 37, 1 << 22):  # one document per lookup, chunks across documents, one lookup in all
        assert shared_fractions(owns, other, chunk) == want


def test_split_logs_its_progress_where_no_terminal_shows_a_bar(tmp_path, monkeypatch, caplog):
    """Away from a terminal (Dagster's logs, a CI log) the long loops of split log how far they are: the
    n-gram hashing, the training documents checked again, the writing, each up to its total."""
    import logging

    from vertical_dag.stages import progress

    monkeypatch.setattr(progress, "LOG_SECONDS", 0.0)
    proj = make_project(tmp_path / "p", params(decontaminate=DECON))
    _contaminated_setup(proj.root)
    with caplog.at_level(logging.INFO, logger="vertical_dag"):
        m = run_stage("split", proj, gate=False)
    lines = [r.getMessage() for r in caplog.records]
    assert "split: n-grams hashed: 1 of 1 batches (100 %)" in " ".join(lines)
    assert any(line.startswith("split: training documents sharing rare n-grams checked: 2 of 2 documents")
               for line in lines)
    assert any(line.startswith(f"split: written: {m['documents_in']} of {m['documents_in']} documents")
               for line in lines)
