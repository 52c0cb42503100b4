"""The Dagster definitions without running DVC: graph, code versions, pool, automation, metadata, checks, UI."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import dagster as dg
import yaml

from vertical_dag.defs import build_definitions
from vertical_dag.defs.checks import check_results
from vertical_dag.defs.jobs import FULL_JOB
from vertical_dag.defs.metadata import read_metrics, stage_metadata
from vertical_dag.defs.pipeline import StageNode, load_pipeline
from vertical_dag.defs.resources import DVC_POOL
from vertical_dag.defs.schedules import REBUILD_SCHEDULE
from vertical_dag.defs.sensors import AUTOMATION_SENSOR, RAW_SENSOR
from vertical_dag.project import Project
from vertical_dag.records import write_json
from vertical_dag.stages import STAGES

from .conftest import BIN, REPO
from .dagster_project import DATA_STAGES, EXPECTED, copy_project, run_assets, write_batch


def test_graph_is_whole_with_lineage_checks_and_automation():
    defs = build_definitions(REPO)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert set(EXPECTED) <= keys
    for name, spec in STAGES.items():  # the registry's lineage is the graph's
        parents = {p.to_user_string() for p in graph.get(dg.AssetKey(spec.asset)).parent_keys}
        want = {STAGES[r].asset for r in spec.reads} | ({"raw_sources"} if spec.raw else set())
        assert parents == want, (name, parents)
    assert graph.get(dg.AssetKey("raw_sources")).is_observable
    for node in load_pipeline(Project(REPO)):
        asset = graph.get(dg.AssetKey(node.asset))
        assert asset.is_materializable == node.runnable
        assert asset.group_name == (
            "data" if node.name in DATA_STAGES else "models" if node.name != "evaluate" else "evaluation"
        )
        if node.runnable:
            assert asset.code_version and asset.owners
            assets_def = defs.resolve_assets_def(node.asset)
            assert assets_def.op.pool == DVC_POOL
            specs = list(assets_def.check_specs)
            assert specs and all(s.blocking for s in specs)
            condition = asset.automation_condition
            assert condition is not None
            assert ("cron" in str(condition.get_label() or condition.name).lower()) == node.is_training
    sensors = {s.name: s for s in defs.sensors}
    assert sensors[RAW_SENSOR].default_status == dg.DefaultSensorStatus.STOPPED
    assert sensors[AUTOMATION_SENSOR].default_status == dg.DefaultSensorStatus.STOPPED
    # the automation sensor targets raw_sources too, so Dagster adds no default sensor of its own
    targeted = sensors[AUTOMATION_SENSOR].asset_selection.resolve(graph)
    assert dg.AssetKey("raw_sources") in targeted and set(EXPECTED) <= {k.to_user_string() for k in targeted}
    assert "default_automation_condition_sensor" not in {s.name for s in defs.get_repository_def().sensor_defs}
    jobs = {j.name: j for j in defs.resolve_all_job_defs()}
    runnable = {n.asset for n in load_pipeline(Project(REPO)) if n.runnable}
    assert {k.to_user_string() for k in jobs[FULL_JOB].asset_layer.executable_asset_keys} >= runnable
    schedule = next(s for s in defs.schedules if s.name == REBUILD_SCHEDULE)
    assert schedule.job_name == FULL_JOB
    assert (
        schedule.cron_schedule == "0 2 * * *" and schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    )


def test_code_version_follows_params_and_code(tmp_path: Path):
    project = copy_project(tmp_path / "proj")
    before = {n.name: n.code_version for n in load_pipeline(project) if n.runnable}
    params = yaml.safe_load(project.params_file.read_text())
    params["ingest"]["max_doc_chars"] = 12345
    project.params_file.write_text(yaml.safe_dump(params, allow_unicode=True))
    after = {n.name: n.code_version for n in load_pipeline(project) if n.runnable}
    assert after["ingest"] != before["ingest"]
    assert after["normalize"] != before["normalize"]  # its gate bounds lengths by ingest.max_doc_chars
    assert all(after[k] == v for k, v in before.items() if k not in ("ingest", "normalize"))
    # files a stage's params name reach its version as they reach DVC (stages/inputs.py)
    model = project.root / "data/cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"one")
    first = next(n for n in load_pipeline(project) if n.name == "base_model").code_version
    model.write_bytes(b"two")
    assert next(n for n in load_pipeline(project) if n.name == "base_model").code_version != first


def test_dagster_yaml_sizes_the_dvc_pool(instance):
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_automation_data_eager_training_on_cron(tmp_path: Path, instance):
    """New raw data requests the data assets at once; training assets wait for their cron, not for data."""
    project = copy_project(tmp_path / "proj")
    write_batch(project.root, "1990s", 20, seed=5)
    defs = build_definitions(project)
    monday = datetime.datetime(2026, 1, 5, 1, 58, tzinfo=datetime.UTC)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=monday)
    assert first.total_requested == 0
    run_assets(defs, ["raw_sources"], instance)  # what the sensor / observe cron does when a file arrives
    after = dg.evaluate_automation_conditions(
        defs=defs,
        instance=instance,
        evaluation_time=monday + datetime.timedelta(minutes=1),
        cursor=first.cursor,
    )
    requested = {r.key.to_user_string() for r in after.results if r.true_subset.size}
    data = {n.asset for n in load_pipeline(project) if n.runnable and not n.is_training}
    training = {n.asset for n in load_pipeline(project) if n.is_training}
    assert data and data <= requested
    assert not requested & training


def test_model_and_report_metadata(tmp_path: Path):
    """Loss curve from the stage's DVC plot, perplexities first, the report's path and headline numbers."""
    project = Project(tmp_path)
    (tmp_path / "data/plots").mkdir(parents=True)
    rows = ["step,loss,lr,tokens,val_ppl"] + [
        f"{i},{5 - i / 20:.3f},0.0001,{i * 512},{'' if i % 10 else 30 - i / 5}" for i in range(60)
    ]
    (tmp_path / "data/plots/pretrain_loss.csv").write_text("\n".join(rows) + "\n")
    write_json(
        {"val_perplexity_base": 31.5, "val_perplexity_final": 19.25, "tokens_per_s": 110.0, "seconds": 9.0},
        project.metrics_file("pretrain"),
    )
    node = StageNode("pretrain", "pretrained_checkpoint", "data/models/pretrained", ("splits",), True, "v", "",
                     is_training=True, plots=("data/plots/pretrain_loss.csv",))
    meta = stage_metadata(project, node, read_metrics(project, "pretrain"), None)
    assert (
        list(meta)[list(meta).index("val_perplexity_base") - 1] != "tokens_per_s"
    )  # perplexities come first
    assert meta["val_perplexity_final"].value == 19.25
    curve = meta["loss_curve"].value
    assert curve.startswith("| step | loss |") and "| 59 | 2.050 |" in curve and curve.count("\n") <= 23

    report = tmp_path / "data/reports/eval/report.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html></html>")
    write_json(
        {"headline": {"finetuned_task_accuracy": 0.42, "base_domain_bpc": 2.1}},
        project.metrics_file("evaluate"),
    )
    node = StageNode("evaluate", "eval_report", "data/reports/eval", (), True, "v", "", is_training=True)
    meta = stage_metadata(project, node, read_metrics(project, "evaluate"), None)
    assert meta["report"].value == str(report)
    assert meta["headline.finetuned_task_accuracy"].value == 0.42


def test_gate_json_to_check_results():
    nodes = {n.name: n for n in load_pipeline(Project(REPO))}
    ingest, base = nodes["ingest"], nodes["base_model"]
    failed = {"stage": "ingest", "success": False, "suite": "s", "expectations": [
        {"name": "documents_present", "column": None, "success": False, "observed": 0, "bound": ">= 1", "description": "d"},
        {"name": "doc_ids_unique", "column": "doc_id", "success": True, "observed": 0, "bound": "0", "description": ""},
    ]}  # fmt: skip
    results = {r.check_name: r for r in check_results(ingest, failed)}
    assert results["documents_present"].passed is False and results["doc_ids_unique"].passed is True
    assert "observed 0" in results["documents_present"].description
    assert "conservation" not in results  # not evaluated: no result rather than a pass
    skipped = {
        "stage": "base_model",
        "success": True,
        "suite": "s",
        "skipped": "gates.enabled is false",
        "expectations": [],
    }
    assert check_results(ingest, skipped | {"stage": "ingest"}) == []
    [summary] = check_results(base, skipped)
    assert summary.passed and "skipped" in summary.description


# ---------------------------------------------------------------- materializing through DVC


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read()).get("data") or {}


LOAD_ERRORS = (
    "{ workspaceOrError { ... on Workspace { locationEntries { name "
    "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
)


def test_webserver_serves_the_asset_graph(tmp_path: Path):
    port = _free_port()
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.pop("VERTICAL_DAG_PROJECT", None)  # found from the working directory, as `dagster dev` would
    log = (tmp_path / "webserver.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-m", "vertical_dag.defs", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    query = "{ assetNodes { assetKey { path } dependencyKeys { path } isMaterializable isObservable } }"
    nodes, errors = [], None
    try:
        deadline = time.time() + 75
        while not nodes and time.time() < deadline and proc.poll() is None:
            time.sleep(1)
            try:
                nodes = _graphql(port, query).get("assetNodes") or []
                if not nodes:
                    errors = _graphql(port, LOAD_ERRORS)
            except (OSError, ValueError):  # not listening yet
                continue
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert nodes, (
        f"no asset graph (exit {proc.poll()}; {errors}):\n{(tmp_path / 'webserver.log').read_text()[-3000:]}"
    )
    graph = {
        "/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes
    }
    assert set(EXPECTED) <= set(graph)
    for node in load_pipeline(Project(REPO)):
        assert set(node.deps) <= graph[node.asset], (node.asset, graph[node.asset])
    assert graph["raw_documents"] == {"raw_sources"}
    assert {"pretrained_checkpoint", "splits"} <= graph["finetuned_model"]
    observable = {"/".join(n["assetKey"]["path"]) for n in nodes if n["isObservable"]}
    assert observable == {"raw_sources"}
