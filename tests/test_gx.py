"""Great Expectations as a GE user finds it: suites, checkpoints, results and Data Docs in the project's gx/."""

from __future__ import annotations

import json
from pathlib import Path

import great_expectations as gx

from vertical_dag.params import Params
from vertical_dag.project import Project
from vertical_dag.quality.gate import validate_stage
from vertical_dag.quality.validate import DATA_DOCS_INDEX

from .test_quality import TEXTS, ids, write_stage

INGEST_METRICS = {"documents_in": 10, "documents_out": 10, "dropped": 0, "quarantined": 0}


def test_gate_validates_through_a_checkpoint_in_the_file_context(tmp_path: Path) -> None:
    write_stage(tmp_path, "data/ingested", ids(10), TEXTS[:10])
    first = validate_stage("ingest", Project(tmp_path), Params(), INGEST_METRICS)
    assert first.success, first.failure_message()
    write_stage(tmp_path, "data/ingested", [*ids(9), "d000"], TEXTS[:10])  # a duplicated id: must fail
    second = validate_stage("ingest", Project(tmp_path), Params(), INGEST_METRICS)
    assert "doc_ids_unique" in {e.name for e in second.failed()}

    context = gx.get_context(mode="file", project_root_dir=str(tmp_path))  # what a GE user opens
    suites = {s.name for s in context.suites.all()}
    assert "vertical_dag.ingest.documents" in suites
    suite = context.suites.get("vertical_dag.ingest.documents")
    assert {e.meta["check"] for e in suite.expectations} >= {"doc_ids_unique"}
    checkpoint = context.checkpoints.get("vertical_dag.ingest.documents")
    assert [a.type for a in checkpoint.actions] == ["update_data_docs"]
    assert [v.name for v in checkpoint.validation_definitions] == ["vertical_dag.ingest.documents"]

    # GE's own validation results, one JSON per run, the last one failed on the duplicate
    runs = sorted((tmp_path / "gx/uncommitted/validations/vertical_dag/ingest/documents").rglob("*.json"))
    assert len(runs) == 2
    outcomes = [json.loads(p.read_text())["success"] for p in runs]
    assert outcomes == [True, False]

    index = (tmp_path / DATA_DOCS_INDEX).read_text(encoding="utf-8")
    assert "vertical_dag.ingest.documents" in index and "vertical_dag.ingest.conservation" in index
    pages = list((tmp_path / "gx/uncommitted/data_docs/local_site/validations").rglob("*.html"))
    assert len(pages) >= 2 * 3  # every run of each of the stage's checkpoints has its page


def test_large_tables_skip_only_the_fingerprint(tmp_path: Path, monkeypatch) -> None:
    from great_expectations.execution_engine import pandas_execution_engine

    from vertical_dag.quality import validate

    def fingerprints() -> list[bool]:
        runs = sorted((tmp_path / "gx/uncommitted/validations/vertical_dag/ingest/documents").rglob("*.json"))
        return ["pandas_data_fingerprint" in json.loads(p.read_text())["meta"]["batch_markers"] for p in runs]

    write_stage(tmp_path, "data/ingested", [*ids(9), "d000"], TEXTS[:10])
    assert "doc_ids_unique" in {e.name for e in validate_stage("ingest", Project(tmp_path), Params(), INGEST_METRICS).failed()}
    assert fingerprints() == [True]  # a small table keeps GE's fingerprint
    monkeypatch.setattr(validate, "FINGERPRINT_BYTES", 0)  # every table counts as large
    failed = validate_stage("ingest", Project(tmp_path), Params(), INGEST_METRICS).failed()
    assert [e.name for e in failed] == ["doc_ids_unique"] and failed[0].observed["unexpected"] == 2  # same checks
    assert fingerprints() == [True, False]
    assert pandas_execution_engine.HASH_THRESHOLD == 1e9  # GE's own setting is back after the gate


def test_the_gate_process_validates_as_the_stage_would_and_a_dead_one_falls_back(tmp_path: Path, caplog) -> None:
    """The gate runs in a process started with the stage (it imports GE meanwhile); its verdict is the one
    validating in the stage's own process gives, and a gate process that died leaves the gate to the stage."""
    import os

    from vertical_dag.quality.gate_process import GateProcess

    write_stage(tmp_path, "data/ingested", [*ids(9), "d000"], TEXTS[:10])  # a duplicated id: fails
    here = validate_stage("ingest", Project(tmp_path), Params(), INGEST_METRICS)
    process = GateProcess()
    try:
        there = process.validate("ingest", Project(tmp_path), Params(), INGEST_METRICS)
        (child,) = process._pool._processes  # the pool's one process: a separate interpreter
        assert child != os.getpid()
        assert [(e.name, e.success, e.observed) for e in there.expectations] == \
            [(e.name, e.success, e.observed) for e in here.expectations]
        assert "doc_ids_unique" in {e.name for e in there.failed()}
        os.kill(child, 9)
        again = process.validate("ingest", Project(tmp_path), Params(), INGEST_METRICS)
    finally:
        process.close()
    assert [(e.name, e.success) for e in again.expectations] == [(e.name, e.success) for e in here.expectations]
    assert "gate process failed" in caplog.text
