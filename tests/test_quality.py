"""Quality gates: each suite passes on good stage outputs and fails, naming the expectation and the observed
value, on outputs broken on purpose; a failing gate stops `dvc repro` at that stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from vertical_dag.params import Params, parse_params
from vertical_dag.project import Project
from vertical_dag.quality.gate import (
    check_stage,
    gate_check_names,
    load_gate_result,
    validate_stage,
    write_gate,
)
from vertical_dag.records import DOC_SCHEMA, LedgerEntry, ledger_table, write_parquet

_HAN = "法律规定合同当事人权利义务履行违约责任赔偿损失财产继承婚姻家庭劳动工资保险税收行政许可处罚复议诉讼"


def _article(i: int) -> str:
    # distinct, article-like texts: a seeded shuffle of legal vocabulary per document
    import random

    rng = random.Random(i)
    return f"第{i}条 " + "".join(rng.sample(_HAN, 30)) + "。"


TEXTS = [_article(i) for i in range(40)]


def docs_table(ids: list[str], texts: list[str], **extra: list) -> pa.Table:
    n = len(ids)
    cols = {"doc_id": ids, "source": ["law"] * n, "uri": [f"law.jsonl:{i}" for i in range(n)], "batch": ["b1"] * n,
            "text": texts, "lang": extra.pop("lang", ["zh"] * n), "meta": ["{}"] * n}
    table = pa.table(cols, schema=DOC_SCHEMA)
    for name, values in extra.items():
        table = table.append_column(name, pa.array(values))
    return table


def write_stage(root: Path, out: str, ids: list[str], texts: list[str], ledger: list[LedgerEntry] = (), part: str = "b1",
                **extra: list) -> None:
    write_parquet(docs_table(ids, texts, **extra), root / out / "parts" / f"{part}.parquet")
    write_parquet(ledger_table(ledger), root / out / "ledger" / f"{part}.parquet")


def ids(n: int, prefix: str = "d") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


def failed(result) -> dict:
    return {e.name: e for e in result.failed()}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path


def run(stage: str, root: Path, metrics: dict | None = None, params: Params | None = None):
    return validate_stage(stage, Project(root), params or Params(), metrics or {})


# ---------------------------------------------------------------- ingest


def test_ingest_gate_passes_and_writes_json_and_markdown(root: Path) -> None:
    write_stage(root, "data/ingested", ids(10), TEXTS[:10])
    result = run("ingest", root, {"documents_in": 10, "documents_out": 10, "dropped": 0, "quarantined": 0})
    assert result.success, result.failure_message()
    assert [e.name for e in result.expectations] == gate_check_names("ingest")
    path = write_gate(result, root / "data" / "gates")
    doc = load_gate_result(root, "ingest")
    assert doc["stage"] == "ingest" and doc["success"] is True and doc["suite"]
    assert set(doc["expectations"][0]) >= {"name", "column", "success", "observed", "bound", "description"}
    conservation = next(e for e in doc["expectations"] if e["name"] == "conservation")
    assert conservation["observed"]["documents_in"] == 10 and conservation["observed"]["difference"] == 0
    md = path.with_suffix(".md").read_text()
    assert "passed" in md and "| ok | doc_ids_unique |" in md


def test_ingest_duplicate_id_empty_text_and_quarantine_rate_fail(root: Path) -> None:
    bad_ids = [*ids(9), "d000"]
    texts = [*TEXTS[:8], "", TEXTS[9]]
    quarantined = [LedgerEntry(f"q{i}", "ingest", "quarantined", "malformed_json") for i in range(2)]
    write_stage(root, "data/ingested", bad_ids, texts, quarantined)
    result = run("ingest", root, {"documents_in": 12})
    bad = failed(result)
    assert set(bad) == {"doc_ids_unique", "text_not_empty", "quarantine_rate"}
    assert bad["doc_ids_unique"].observed["unexpected"] == 2
    assert bad["doc_ids_unique"].observed["examples"][0]["doc_id"] == "d000"
    assert bad["text_not_empty"].observed["examples"] == [{"doc_id": "d008", "n_chars": 0}]
    assert bad["quarantine_rate"].observed["quarantine_rate"] == pytest.approx(2 / 12, abs=1e-5)
    msg = result.failure_message()
    assert "doc_ids_unique (expect_column_values_to_be_unique, column doc_id): observed" in msg
    assert "quarantine_rate" in msg and "<= 0.05" in msg and "0.166667" in msg


def test_conservation_broken_names_the_difference(root: Path) -> None:
    write_stage(root, "data/ingested", ids(6), TEXTS[:6])
    # dedup keeps 4 and records only 1 drop: one document vanished
    write_stage(root, "data/deduplicated", ids(4), TEXTS[:4], [LedgerEntry("d004", "dedup", "dropped", "exact_duplicate", ref_doc_id="d000")])
    result = run("dedup", root, {"documents_in": 6, "documents_out": 4, "dropped": 1})
    bad = failed(result)
    assert list(bad) == ["conservation"]
    assert bad["conservation"].observed == {"documents_in": 6, "documents_out": 4, "ledger_dropped": 1,
                                            "ledger_quarantined": 0, "difference": 1}
    assert "conservation" in result.failure_message() and '"difference": 1' in result.failure_message()


# ---------------------------------------------------------------- dedup


def test_dedup_exact_hash_shared_and_duplicate_rate(root: Path) -> None:
    write_stage(root, "data/ingested", ids(10), TEXTS[:10])
    drops = [LedgerEntry(f"d{i:03d}", "dedup", "dropped", "exact_duplicate") for i in range(6, 10)]
    hashes = ["h0", "h1", "h2", "h3", "h4", "h0"]  # d005 shares d000's exact hash
    write_stage(root, "data/deduplicated", ids(6), TEXTS[:6], drops, canonical_hash=hashes, cluster_id=ids(6))
    params = parse_params({"gates": {"max_duplicate_rate": 0.3}})
    result = run("dedup", root, {"documents_in": 10}, params)
    bad = failed(result)
    assert set(bad) == {"exact_hashes_unique", "duplicate_rate"}
    assert {ex["doc_id"] for ex in bad["exact_hashes_unique"].observed["examples"]} == {"d000", "d005"}
    assert bad["duplicate_rate"].observed["drop_rate"] == pytest.approx(0.4)
    assert "between 0.0 and 0.3" in result.failure_message()
    # with distinct hashes and a looser bound the same outputs pass
    write_stage(root, "data/deduplicated", ids(6), TEXTS[:6], drops, canonical_hash=[f"h{i}" for i in range(6)])
    assert run("dedup", root, {"documents_in": 10}).success


# ---------------------------------------------------------------- normalize


def test_normalize_pii_left_in_text_fails(root: Path) -> None:
    write_stage(root, "data/deduplicated", ids(5), TEXTS[:5])
    texts = [TEXTS[0], "联系电话 <PHONE>，邮箱 <EMAIL>。", "举报电话：13812345678，请及时处理。", "服务器 192.168.10.25 已停用。", TEXTS[4]]
    write_stage(root, "data/normalized", ids(5), texts)
    result = run("normalize", root, {"documents_in": 5})
    bad = failed(result)
    assert list(bad) == ["no_pii_left"]
    assert bad["no_pii_left"].observed["unexpected"] == 2
    assert bad["no_pii_left"].observed["examples"] == [{"doc_id": "d002", "pii_found": "PHONE"}, {"doc_id": "d003", "pii_found": "IP"}]
    assert "no_pii_left (expect_column_values_to_be_null, column pii_found)" in result.failure_message()


def test_normalize_language_and_length_bounds(root: Path) -> None:
    write_stage(root, "data/deduplicated", ids(4), TEXTS[:4])
    write_stage(root, "data/normalized", ids(4), [*TEXTS[:3], "短"], lang=["zh", "zh", "en", "zh"])
    params = parse_params({"normalize": {"allowed_languages": ["zh"]}, "gates": {"min_doc_chars": 5}})
    bad = failed(run("normalize", root, {}, params))
    assert set(bad) == {"lang_allowed", "length_within_bounds"}
    assert bad["lang_allowed"].observed["examples"] == [{"doc_id": "d002", "lang": "en"}]
    assert bad["length_within_bounds"].observed["examples"] == [{"doc_id": "d003", "n_chars": 1}]
    # without an allowed set any detected language passes, a missing one does not
    write_stage(root, "data/normalized", ids(4), TEXTS[:4], lang=["zh", "en", None, "zh"])
    bad = failed(run("normalize", root, {}))
    assert list(bad) == ["lang_allowed"] and bad["lang_allowed"].expectation == "expect_column_values_to_not_be_null"


def test_normalize_gate_follows_the_normalize_section(root: Path) -> None:
    write_stage(root, "data/deduplicated", ids(3), TEXTS[:3])
    write_stage(root, "data/normalized", ids(3), [TEXTS[0], "服务器 192.168.10.25 已停用。", TEXTS[2]], lang=["zh", "zh", "und"])
    # IP addresses are not redacted by this project, and undetermined languages are kept
    params = parse_params({"normalize": {"allowed_languages": ["zh"], "drop_undetermined_language": False,
                                         "pii": {"types": ["EMAIL", "PHONE"]}}})
    result = run("normalize", root, {}, params)
    assert result.success, result.failure_message()
    lang = next(e for e in result.expectations if e.name == "lang_allowed")
    assert lang.bound == "in ['zh', 'und']"
    # with redaction switched off the gate still looks for every built-in PII type
    params = parse_params({"normalize": {"pii": {"enabled": False}}})
    assert list(failed(run("normalize", root, {}, params))) == ["no_pii_left"]


# ---------------------------------------------------------------- split


def write_splits(root: Path, assignment: dict[str, list[int]], *, clusters: list[str] | None = None,
                 texts: list[str] | None = None, extra_ids: dict[str, list[str]] | None = None,
                 families: list[str] | None = None) -> None:
    texts = texts or TEXTS
    for name, idx in assignment.items():
        doc_ids = [f"d{i:03d}" for i in idx] + (extra_ids or {}).get(name, [])
        body = [texts[i] for i in idx] + [TEXTS[0]] * len((extra_ids or {}).get(name, []))
        cl = [clusters[i] for i in idx] if clusters else doc_ids
        cl = cl + ["c-extra"] * (len(doc_ids) - len(cl))
        extra = {"family_id": [families[i] for i in idx]} if families else {}
        table = docs_table(doc_ids, body, split=[name] * len(doc_ids), cluster_id=cl, **extra)
        write_parquet(table, root / "data/splits" / f"{name}.parquet")


GOOD_SPLIT = {"train": list(range(32)), "validation": list(range(32, 36)), "test": list(range(36, 40))}
SPLIT_PARAMS = {"split": {"fractions": {"train": 0.8, "validation": 0.1, "test": 0.1}}}


def test_split_gate_passes_on_good_splits(root: Path) -> None:
    write_stage(root, "data/normalized", ids(40), TEXTS)
    write_splits(root, GOOD_SPLIT)
    result = run("split", root, {"documents_in": 40}, parse_params(SPLIT_PARAMS))
    assert result.success, result.failure_message()
    fractions = next(e for e in result.expectations if e.name == "split_fractions").observed
    assert {r["split"]: r["fraction"] for r in fractions} == {"train": 0.8, "validation": 0.1, "test": 0.1}


def test_split_with_duplicated_id_fails(root: Path) -> None:
    write_stage(root, "data/normalized", ids(40), TEXTS)
    write_splits(root, GOOD_SPLIT, extra_ids={"test": ["d005"]})  # d005 is in train and in test
    result = run("split", root, {}, parse_params(SPLIT_PARAMS))
    bad = failed(result)
    assert "doc_ids_unique" in bad and "conservation" in bad
    assert {ex["doc_id"] for ex in bad["doc_ids_unique"].observed["examples"]} == {"d005"}


def test_split_cluster_across_splits_fails(root: Path) -> None:
    write_stage(root, "data/normalized", ids(40), TEXTS)
    clusters = [f"c{i}" for i in range(40)]
    clusters[37] = "c3"  # a near duplicate of a train document ended up in test
    write_splits(root, GOOD_SPLIT, clusters=clusters)
    bad = failed(run("split", root, {}, parse_params(SPLIT_PARAMS)))
    assert list(bad) == ["clusters_in_one_split", "families_in_one_split"]  # without family ids: one per cluster
    assert bad["clusters_in_one_split"].observed["examples"] == [{"cluster_id": "c3", "n_splits": 2}]


def test_split_template_family_across_splits_fails(root: Path) -> None:
    write_stage(root, "data/normalized", ids(40), TEXTS)
    families = [f"d{i:03d}" for i in range(40)]
    families[38] = families[37] = "d005"  # two variants of a train document's form ended up in test
    write_splits(root, GOOD_SPLIT, families=families)
    bad = failed(run("split", root, {}, parse_params(SPLIT_PARAMS)))
    assert list(bad) == ["families_in_one_split"]
    assert bad["families_in_one_split"].observed["examples"] == [{"family_id": "d005", "n_splits": 2}]


def test_split_fractions_off_fails(root: Path) -> None:
    write_stage(root, "data/normalized", ids(40), TEXTS)
    write_splits(root, {"train": list(range(20)), "validation": list(range(20, 30)), "test": list(range(30, 40))})
    bad = failed(run("split", root, {}, parse_params(SPLIT_PARAMS)))
    assert list(bad) == ["split_fractions"]
    observed = {r["split"]: r["fraction"] for r in bad["split_fractions"].observed}
    assert observed == {"train": 0.5, "validation": 0.25, "test": 0.25}
    # each document its own family here: the row says how many of them each split holds
    families = {r["split"]: (r["families"], r["of_families"]) for r in bad["split_fractions"].observed}
    assert families == {"train": (20, 40), "validation": (10, 40), "test": (10, 40)}


def test_split_fractions_of_one_large_family_say_so(root: Path) -> None:
    """Half the corpus is variants of one form, which lands in validation whole: the fractions cannot be
    met, and the failure shows why (the families each split holds) and what to change."""
    write_stage(root, "data/normalized", ids(40), TEXTS)
    families = ["d000"] * 20 + [f"d{2 * (i // 2):03d}" for i in range(20, 38)] + ["d038"] * 2
    write_splits(root, {"validation": list(range(20)), "train": list(range(20, 38)), "test": [38, 39]},
                 families=families)
    result = run("split", root, {}, parse_params(SPLIT_PARAMS))
    bad = failed(result)
    assert list(bad) == ["split_fractions"]
    families = {r["split"]: (r["families"], r["of_families"]) for r in bad["split_fractions"].observed}
    assert families == {"train": (9, 11), "validation": (1, 11), "test": (1, 11)}
    assert '"split": "validation", "fraction": 0.5' in result.failure_message()
    assert result.failure_message().endswith("add documents or change split.fractions)")


def test_split_contamination_left_fails(root: Path) -> None:
    texts = list(TEXTS)
    texts[38] = texts[2] + "（修订）"  # a test document that is a copy of a train document
    write_stage(root, "data/normalized", ids(40), texts)
    write_splits(root, GOOD_SPLIT, texts=texts)
    bad = failed(run("split", root, {}, parse_params({**SPLIT_PARAMS, "gates": {"max_contamination": 0.5}})))
    assert list(bad) == ["no_contamination"]
    [example] = bad["no_contamination"].observed["examples"]
    assert example["doc_id"] == "d038" and example["contamination"] > 0.8


# ---------------------------------------------------------------- models


def test_pretrain_gate(root: Path) -> None:
    assert run("pretrain", root, {"val_perplexity_base": 30.0, "val_perplexity_final": 12.5}).success
    bad = failed(run("pretrain", root, {"val_perplexity_base": 30.0, "val_perplexity_final": 31.0}))
    assert list(bad) == ["perplexity_improved"] and bad["perplexity_improved"].observed["perplexity_gain"] == -1.0
    bad = failed(run("pretrain", root, {"val_perplexity_base": 30.0}))
    assert "metrics_present" in bad and bad["metrics_present"].observed["examples"][0]["metric"] == "val_perplexity_final"
    # a document neither trained on nor in the ledger breaks conservation
    write_parquet(ledger_table([LedgerEntry("x1", "pretrain", "dropped", "no_tokens")]), root / "data/models/pretrained/ledger/train.parquet")
    ppl = {"val_perplexity_base": 30.0, "val_perplexity_final": 12.5}
    assert run("pretrain", root, {**ppl, "documents_in": 10, "documents_out": 9, "dropped": 1}).success
    bad = failed(run("pretrain", root, {**ppl, "documents_in": 11, "documents_out": 9, "dropped": 2}))
    assert list(bad) == ["conservation"] and bad["conservation"].observed["difference"] == 1


def test_evaluate_gate(root: Path) -> None:
    good = {"models": {"base": {"domain_bpc": 2.0, "general_bpc": 1.0, "task_accuracy": 0.25},
                       "pretrained": {"domain_bpc": 1.5, "general_bpc": 1.05, "task_accuracy": 0.3},
                       "finetuned": {"domain_bpc": 1.6, "general_bpc": 1.1, "task_accuracy": 0.6}}}
    assert run("evaluate", root, good).success
    forgot = json.loads(json.dumps(good))
    forgot["models"]["pretrained"]["general_bpc"] = 1.5
    forgot["models"]["finetuned"]["task_accuracy"] = 0.2
    result = run("evaluate", root, forgot)
    assert set(failed(result)) == {"general_bpc_not_worse", "task_accuracy_improved"}
    assert "general_bpc_increase" in result.failure_message() and "<= 0.1" in result.failure_message()
    # without a general corpus forgetting is not measured and not demanded; bounds come from gates.*
    no_general = json.loads(json.dumps(good))
    for m in no_general["models"].values():
        del m["general_bpc"]
    assert run("evaluate", root, no_general).success
    strict = parse_params({"gates": {"min_task_accuracy_gain": 0.5}})
    assert list(failed(run("evaluate", root, no_general, strict))) == ["task_accuracy_improved"]
    # a model that was not evaluated fails the gates that need it
    del no_general["models"]["finetuned"]
    assert list(failed(run("evaluate", root, no_general))) == ["metrics_present", "task_accuracy_improved"]


# ---------------------------------------------------------------- wiring


def test_stage_without_suite_writes_an_empty_passing_gate(root: Path) -> None:
    (root / "params.yaml").write_text("{}\n")
    result = check_stage(Project(root), "base_model")
    assert result.success and result.expectations == []
    assert load_gate_result(root, "base_model") == {"stage": "base_model", "success": True, "suite": "vertical_dag.base_model",
                                                    "expectations": [], "seconds": result.seconds}
    assert (root / "data/gates/base_model.md").exists()


def test_skipped_gate_still_writes_its_file(root: Path) -> None:
    import logging

    from vertical_dag.quality.gate import skip_gate
    from vertical_dag.stages import STAGES
    from vertical_dag.stages.context import StageContext

    ctx = StageContext(Project(root), Params(), STAGES["dedup"], logging.getLogger("test"))
    skip_gate(ctx, "gates.enabled is false")
    gate = load_gate_result(root, "dedup")
    assert gate["success"] is True and gate["skipped"] == "gates.enabled is false" and gate["expectations"] == []
    assert "skipped" in (root / "data/gates/dedup.md").read_text()


def test_great_expectations_stays_off_the_cli_start_up_path() -> None:
    code = ("import sys, vertical_dag.cli, vertical_dag.quality.gate as g; g.gate_check_names('split'); "
            "vertical_dag.cli.build_parser(); assert 'great_expectations' not in sys.modules, 'GE imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_gates_params_reject_bad_bounds() -> None:
    from vertical_dag.params import ParamsError

    with pytest.raises(ParamsError, match="max_quarantine_rate"):
        parse_params({"gates": {"max_quarantine_rate": 2}})
    with pytest.raises(ParamsError, match="min_duplicate_rate"):
        parse_params({"gates": {"min_duplicate_rate": 0.5, "max_duplicate_rate": 0.2}})


def write_raw(project: Path, n: int = 30) -> None:
    folder = project / "data/raw/docs"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"a{i}", "text": "".join(_article(1000 * k + i) for k in range(3))} for i in range(n)]
    (folder / "batch1.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def set_gate(project: Path, **bounds: object) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    params.setdefault("gates", {}).update(bounds)
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")


def locked_stages(project: Path) -> set[str]:
    lock = project / "dvc.lock"
    return set((yaml.safe_load(lock.read_text()) or {}).get("stages", {})) if lock.exists() else set()


def test_dvc_repro_stops_at_the_failing_gate(project: Path) -> None:
    write_raw(project)
    # the split stage assigns ~90/5/5 by a hash; the gate is told to allow no deviation at all
    set_gate(project, split_fraction_tolerance=0.0, split_fraction_sigmas=0.0)
    proc = subprocess.run(["dvc", "repro", "split"], cwd=project, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "quality gate failed for stage split" in out
    assert "split_fractions (expect_column_values_to_be_between, column excess): observed [" in out
    assert '"split": "train"' in out and '"expected": 0.9' in out and "bound |fraction - expected| <=" in out
    # the stages before it passed their gates and were recorded; the failed one was not
    assert locked_stages(project) == {"inputs", "ingest", "dedup", "normalize"}
    for stage in ("ingest", "dedup", "normalize"):
        assert load_gate_result(project, stage)["success"] is True
    gate = load_gate_result(project, "split")
    assert gate["success"] is False and [e["name"] for e in gate["expectations"] if not e["success"]] == ["split_fractions"]
    assert "**FAIL** | split_fractions" in (project / "data/gates/split.md").read_text()
    # with the expectation met the same data passes and the stage is recorded
    set_gate(project, split_fraction_tolerance=0.05, split_fraction_sigmas=3.0)
    proc = subprocess.run(["dvc", "repro", "split"], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "split" in locked_stages(project) and load_gate_result(project, "split")["success"] is True


def test_unreadable_outputs_fail_every_check(root: Path) -> None:
    (root / "data/ingested/parts").mkdir(parents=True)
    (root / "data/ingested/parts/b1.parquet").write_text("not parquet")
    result = run("ingest", root, {"documents_in": 3})
    assert not result.success and len(result.failed()) == len(gate_check_names("ingest"))
    assert "error:" in result.failure_message()


def test_split_pairs_count_what_a_pandas_groupby_counts() -> None:
    """The split gate's group tables (dictionary codes, one sort) against pandas' groupby().nunique(), with
    groups and splits missing here and there."""
    import numpy as np
    import pandas as pd

    from vertical_dag.quality import profile

    rng = np.random.default_rng(7)
    n = 5000
    keys = pd.Series([f"g{k}" for k in rng.integers(0, 900, n)], dtype=str)
    keys[rng.random(n) < 0.05] = None
    splits = pd.Series(rng.choice(["train", "validation", "test"], n, p=[0.8, 0.1, 0.1]), dtype=str)
    splits[rng.random(n) < 0.05] = None
    docs = pd.DataFrame({"family_id": keys, "split": splits})

    pairs = profile.split_pairs(docs, "family_id")
    got = profile.splits_per_group(pairs, "family_id").set_index("family_id")["n_splits"].sort_index()
    want = docs.groupby("family_id")["split"].nunique().sort_index()
    assert len(got) > 800 and got.to_dict() == want.to_dict() and set(got) == {0, 1, 2, 3}
    rows = profile.split_fractions(pairs, n, {"train": 0.8, "validation": 0.1, "test": 0.1}, 0.02, 3.0)
    for r in rows.to_dict("records"):
        here = docs["split"] == r["split"]
        assert r["fraction"] == round(here.sum() / n, 6)
        assert r["families"] == docs.loc[here, "family_id"].nunique()
        assert r["of_families"] == docs["family_id"].nunique()
