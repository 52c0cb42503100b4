"""The Dagster adapter against real Dagster, real DVC and the real stages, in temporary copies of this project.

The raw set is small generated Chinese-like text (two batches), so every data stage runs in seconds.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
import yaml

from vertical_dag.defs import build_definitions
from vertical_dag.defs.checks import check_results
from vertical_dag.defs.jobs import FULL_JOB
from vertical_dag.defs.metadata import read_metrics, stage_metadata
from vertical_dag.defs.pipeline import DEFAULT_DEPS, StageNode, load_pipeline, locked_outs
from vertical_dag.defs.resources import DVC_POOL
from vertical_dag.defs.schedules import REBUILD_SCHEDULE
from vertical_dag.defs.sensors import AUTOMATION_SENSOR, RAW_SENSOR
from vertical_dag.project import Project
from vertical_dag.records import write_json
from vertical_dag.stages import STAGES

from .conftest import BIN, REPO

EXPECTED = [
    "raw_sources",
    "raw_documents",
    "deduplicated",
    "normalized",
    "splits",
    "base_model",
    "pretrained_checkpoint",
    "finetuned_model",
    "eval_report",
]
DATA_STAGES = ("ingest", "dedup", "normalize", "split")
HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研"


def write_batch(root: Path, name: str, n: int, seed: int) -> Path:
    """One raw JSONL batch of n Chinese-like articles, a few of them exact repeats (real duplicates)."""
    rng = random.Random(seed)
    texts = [
        "第" + str(i + 1) + "条 " + "".join(rng.choice(HAN) for _ in range(rng.randint(40, 240))) + "。"
        for i in range(n)
    ]
    for i in range(0, n, 25):  # every 25th article repeats an earlier one
        texts[i] = texts[max(0, i - 7)]
    path = root / "data" / "raw" / "china_law" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"id": f"{name}-{i}", "text": t, "law_name": f"测试法{seed}"}, ensure_ascii=False)
        for i, t in enumerate(texts)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sh(*cmd: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_project(dest: Path, extra_stages: dict | None = None, params_patch: dict | None = None) -> Project:
    """This project's params.yaml / dvc.yaml / dagster.yaml and the stage code (dvc.yaml has code deps on it)."""
    dest.mkdir(parents=True)
    for name in ("params.yaml", "dvc.yaml", "dagster.yaml"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(
        REPO / "vertical_dag", dest / "vertical_dag", ignore=shutil.ignore_patterns("__pycache__")
    )
    if extra_stages:
        dvc = yaml.safe_load((dest / "dvc.yaml").read_text())
        dvc["stages"].update(extra_stages)
        (dest / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    if params_patch:
        params = yaml.safe_load((dest / "params.yaml").read_text())
        for section, values in params_patch.items():
            params[section] = {**(params.get(section) or {}), **values}
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    sh("git", "init", "-q", cwd=dest)
    sh(str(BIN / "dvc"), "init", "-q", cwd=dest)
    return Project(dest)


def runnable_data_keys(project: Project) -> list[str]:
    return [n.asset for n in load_pipeline(project) if n.runnable and n.name in DATA_STAGES]


@pytest.fixture(scope="module")
def instance():
    """A real (temporary, sqlite) instance configured by this project's dagster.yaml: pool "dvc" sized 1."""
    with dg.instance_for_test(overrides=yaml.safe_load((REPO / "dagster.yaml").read_text())) as inst:
        yield inst


def materializations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetMaterialization]:
    return {
        e.asset_key.to_user_string(): e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
    }


def run_assets(
    defs: dg.Definitions, keys: list[str], instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        asset_selection=[dg.AssetKey(k) for k in keys], instance=instance, raise_on_error=False
    )


# ---------------------------------------------------------------- the graph (no DVC run)


def test_graph_is_whole_with_lineage_checks_and_automation():
    defs = build_definitions(REPO)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert set(EXPECTED) <= keys
    asset_of = {name: spec.asset for name, spec in STAGES.items()} | {"raw": "raw_sources"}
    for name, deps in DEFAULT_DEPS.items():  # every registry stage's upstream is wired, runnable or not
        parents = {p.to_user_string() for p in graph.get(dg.AssetKey(asset_of[name])).parent_keys}
        assert {asset_of[d] for d in deps} <= parents, (name, parents)
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
    assert all(after[k] == v for k, v in before.items() if k != "ingest")
    (project.root / "vertical_dag/stages/ingest.py").write_text("# changed\n", encoding="utf-8")
    assert next(n for n in load_pipeline(project) if n.name == "ingest").code_version != after["ingest"]


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
    node = StageNode(
        "pretrain",
        "pretrained_checkpoint",
        "data/models/pretrained",
        ("splits",),
        True,
        "v",
        "",
        ("data/plots/pretrain_loss.csv",),
    )
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
    node = StageNode("evaluate", "eval_report", "data/reports/eval", (), True, "v", "")
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
        assert "| doc_id |" in meta["sample_documents"].value
    if "deduplicated" in mats:
        dedup = mats["deduplicated"].metadata
        assert 0 < dedup["duplicate_rate"].value < 0.2  # every 25th generated article is a repeat
        assert "duplicate" in dedup["drops_by_reason"].value
    if "splits" in mats:
        assert "| train |" in mats["splits"].metadata["split_sizes"].value
    ingest = mats["raw_documents"].metadata
    assert ingest["documents_out"].value == 300 and ingest["files_new"].value == 2
    stages = [nodes[k].name for k in keys]
    status = sh(str(BIN / "dvc"), "status", *stages, cwd=project.root).stdout
    assert "up to date" in status, status
    repro = sh(str(BIN / "dvc"), "repro", stages[-1], cwd=project.root)
    assert "Running stage" not in repro.stdout and "didn't change" in repro.stdout, repro.stdout


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
    summary = {  # a downstream stage of ingest, so the test does not depend on which stages exist
        "cmd": "python -c \"import pathlib; pathlib.Path('data/summary.txt').write_text('ok')\"",
        "deps": ["data/ingested"],
        "outs": [{"data/summary.txt": {"cache": False}}],
    }
    broken = {  # a stage that crashes (not a gate failure)
        "cmd": "python -c \"import sys; print('stage crashed here'); sys.exit(3)\"",
        "outs": [{"data/broken.txt": {"cache": False}}],
    }
    project = copy_project(
        tmp_path / "proj",
        extra_stages={"ingest_summary": summary, "broken": broken},
        params_patch={"gates": {"min_documents": 1_000_000}},
    )
    write_batch(project.root, "1990s", 40, seed=4)
    defs = build_definitions(project)
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey("raw_documents") in graph.get(dg.AssetKey("ingest_summary")).parent_keys
    result = run_assets(defs, ["raw_sources", "raw_documents", "ingest_summary"], instance)
    assert not result.success
    checks = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert checks["documents_present"].passed is False
    assert checks["documents_present"].metadata["observed"].value == "40"
    assert "ingest_summary" not in materializations(result)
    assert not (project.root / "data/summary.txt").exists()
    assert not locked_outs(project, "ingest")  # DVC did not record the failed stage's outputs
    gate = json.loads((project.gates_dir / "ingest.json").read_text())
    assert gate["success"] is False

    crashed = run_assets(defs, ["broken"], instance)  # no gate involved: the step fails with the stage's log
    failure = next(e for e in crashed.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.step_failure_data.user_failure_data
    assert "exited with 3" in error.description and "stage crashed here" in error.metadata["log_tail"].value


# ---------------------------------------------------------------- the web UI


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
