"""Materializing through DVC in temporary copies of this project: dvc.lock, the sensor, blocking gates."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from vertical_dag.defs import build_definitions
from vertical_dag.defs.pipeline import load_pipeline, locked_outs
from vertical_dag.defs.resources import DVC_POOL
from vertical_dag.defs.sensors import RAW_SENSOR

from .conftest import BIN
from .dagster_project import (
    copy_project,
    materializations,
    run_assets,
    runnable_data_keys,
    sh,
    write_batch,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory, instance):
    """A project copy with two raw batches whose data assets were materialized once, in-process."""
    project = copy_project(tmp_path_factory.mktemp("built") / "proj")
    write_batch(project.root, "1990s", 150, seed=1)
    write_batch(project.root, "2000s", 150, seed=2)
    defs = build_definitions(project)
    keys = runnable_data_keys(project)
    return project, defs, keys, run_assets(defs, ["raw_sources", *keys], instance), instance


def test_materialize_data_assets_records_dvc_lock(built):
    project, defs, keys, result, instance = built
    assert result.success
    pool = instance.event_log_storage.get_concurrency_info(DVC_POOL)
    assert pool.slot_count == 1  # the pool was used, with one slot
    streamed = [
        e.user_message for e in instance.all_logs(result.run_id) if e.user_message.startswith("[ingest]")
    ]
    assert any("Running stage 'ingest'" in m for m in streamed)  # the stage's log is in the run log
    assert any("vertical_dag.ingest" in m for m in streamed)
    mats = materializations(result)
    assert set(keys) <= set(mats)
    nodes = {n.asset: n for n in load_pipeline(project)}
    for key in keys:
        node, meta = nodes[key], mats[key].metadata
        recorded = locked_outs(project, node.name)
        assert recorded.get(node.out), f"{node.name} not recorded in dvc.lock"
        assert mats[key].tags["dagster/data_version"] == recorded[node.out]  # the output hash is the version
        assert mats[key].tags["dagster/code_version"] == node.code_version
        assert meta["documents_out"].value > 0 and meta["dvc_action"].value == "ran"
        assert meta["metrics_from"].value == "dagster-pipes"  # the stage itself reported, through Pipes
        assert "| doc_id |" in meta["sample_documents"].value
    dedup = mats["deduplicated"].metadata
    assert 0 < dedup["duplicate_rate"].value < 0.2  # every 25th generated article is a repeat
    assert "duplicate" in dedup["drops_by_reason"].value
    assert "| train |" in mats["splits"].metadata["split_sizes"].value
    ingest = mats["raw_documents"].metadata
    assert ingest["documents_out"].value == 300 and ingest["files_new"].value == 2
    stages = [nodes[k].name for k in keys]
    status = sh(str(BIN / "dvc"), "status", *stages, cwd=project.root).stdout
    assert "up to date" in status, status
    repro = sh(str(BIN / "dvc"), "repro", stages[-1], cwd=project.root)
    # only the inputs stage runs (it always does, in about a second); every data stage is skipped
    assert not any(f"Running stage '{s}'" in repro.stdout for s in stages), repro.stdout
    assert all(f"Stage '{s}' didn't change" in repro.stdout for s in stages), repro.stdout


def test_unchanged_stage_is_skipped_and_shows_its_recorded_metrics(built):
    project, defs, keys, first, instance = built
    again = run_assets(defs, keys[:1], instance)  # nothing changed: `dvc status --json` says DVC will skip
    assert again.success
    meta = materializations(again)[keys[0]].metadata
    assert meta["dvc_action"].value == "skipped (unchanged)"
    assert meta["metrics_from"].value == "metrics.json"  # the stage did not run, so it reported nothing
    assert meta["documents_out"].value == materializations(first)[keys[0]].metadata["documents_out"].value


def test_sensor_runs_only_the_new_batch(built):
    project, defs, keys, _, instance = built
    sensor = defs.resolve_sensor_def(RAW_SENSOR)
    from vertical_dag.defs.assets_data import raw_fingerprint

    seen, _ = raw_fingerprint(project)
    quiet = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=seen, definitions=defs))
    assert not quiet.run_requests and quiet.skip_message

    write_batch(project.root, "2010s", 60, seed=3)
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=seen, definitions=defs))
    assert len(tick.run_requests) == 1 and tick.cursor != seen
    request = tick.run_requests[0]
    requested = [k.to_user_string() for k in request.asset_selection]
    assert set(requested) == {"raw_sources", *keys}

    result = run_assets(defs, requested, instance)
    assert result.success
    ingest = json.loads(project.metrics_file("ingest").read_text())
    assert ingest["files_new"] == 1 and ingest["new_parts"] == 1 and ingest["files_skipped_unchanged"] == 2
    assert ingest["documents_out"] == 360
    # every per-part (incremental) stage took both old batches as new parts the first time, one part now
    first = {k: m.metadata.get("new_parts") for k, m in materializations(built[3]).items()}
    incremental = [k for k in keys if first.get(k) is not None and first[k].value == 2]
    assert "raw_documents" in incremental
    now = materializations(result)
    for key in incremental:
        assert now[key].metadata["new_parts"].value == 1, key
    again = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=tick.cursor, definitions=defs)
    )
    assert not again.run_requests


def test_failing_gate_blocks_downstream(tmp_path: Path, instance):
    project = copy_project(tmp_path / "proj", params_patch={"gates": {"min_documents": 1_000_000}})
    write_batch(project.root, "1990s", 40, seed=4)
    defs = build_definitions(project)
    result = run_assets(defs, ["raw_sources", "raw_documents", "deduplicated"], instance)
    assert not result.success
    checks = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert checks["documents_present"].passed is False
    assert checks["documents_present"].metadata["observed"].value == "40"
    assert "deduplicated" not in materializations(result)  # blocked by the failed check upstream
    assert not (project.root / "data/deduplicated").exists()
    assert not locked_outs(project, "ingest")  # DVC did not record the failed stage's outputs
    gate = json.loads((project.gates_dir / "ingest.json").read_text())
    assert gate["success"] is False

    # a stage that crashes (no gate involved: a corrupt model file) fails its step with the stage's log
    model = project.root / "data/cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"not a gguf file at all")
    crashed = run_assets(defs, ["base_model"], instance)
    failure = next(e for e in crashed.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.step_failure_data.user_failure_data
    assert "exited with 1" in error.description and "gguf" in error.metadata["log_tail"].value.lower()


# ---------------------------------------------------------------- the web UI
