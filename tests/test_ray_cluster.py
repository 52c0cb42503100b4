"""The Ray executor on real Ray clusters started by the tests (`ray start` on 127.0.0.1): the same outputs
as one process, and a node that does not see the project's data folder stops a stage before any work."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from vertical_dag.stages import STAGES

from .conftest import BIN, run_cli
from .test_stage_core import DATA_STAGES, data_outputs, write_docs, write_span_pairs

RAY = str(BIN / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_head(temp: Path, cpus: int) -> str:
    port = _free_port()
    subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={cpus}",
                    "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                   check=True, capture_output=True, text=True, timeout=180)
    return f"127.0.0.1:{port}"


def _stop_ray() -> None:
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


@pytest.fixture
def ray_cluster(tmp_path_factory):
    """A real local Ray cluster (head node on 127.0.0.1, 2 CPUs), stopped afterwards."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    yield _start_head(tmp_path_factory.mktemp("ray"), 2)
    _stop_ray()


def _on_ray(params: str, address: str) -> str:
    return params.replace("backend: local", "backend: ray").replace("ray_address: null", f"ray_address: '{address}'")


def test_ray_gives_the_same_outputs_as_one_process(project: Path, ray_cluster: str):
    raw = project / "data/raw/docs"
    for i in range(3):
        write_docs(raw / f"r{i}.jsonl", 150, 10 + i, prefix=f"r{i}-")
    write_span_pairs(raw / "pairs.jsonl", 60, 8)
    params = project / "params.yaml"
    base = params.read_text()
    outputs = {}
    for name, text in (("local", base.replace("workers: auto", "workers: 1")), ("ray", _on_ray(base, ray_cluster))):
        params.write_text(text)
        for stage in DATA_STAGES:
            shutil.rmtree(project / STAGES[stage].out, ignore_errors=True)
            out = json.loads(run_cli("run", stage, "--no-gate", "--json", cwd=project).stdout)
            if name == "ray" and stage != "dedup":
                assert out["workers"] == 2  # the cluster's CPUs ran the parts
        outputs[name] = data_outputs(project)
    assert outputs["ray"] == outputs["local"]


def _can_mount_privately(folder: Path) -> bool:
    """Whether this process may mount a tmpfs in a mount namespace of its own (root on Linux, where the
    container allows it): what the blind node needs."""
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs probe '{folder}'"], capture_output=True)
    return probe.returncode == 0


def _join(address: str, *, empty_over: Path | None = None, env: dict[str, str] | None = None) -> None:
    """One more node of the cluster at `address`, on this machine (1 CPU). empty_over: a folder that this
    node sees as an empty tmpfs (its own mount namespace)."""
    start = (f"exec '{RAY}' start --address={address} --node-ip-address=127.0.0.1 --num-cpus=1 "
             "--disable-usage-stats")
    argv = ["sh", "-c", start]
    if empty_over is not None:
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                f"mount -t tmpfs blind-node '{empty_over}' && {start}"]
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})})


def _wait_for_nodes(address: str, n: int) -> None:
    wait = textwrap.dedent(f"""
        import time, ray
        ray.init(address={address!r}, log_to_driver=False)
        t = time.time()
        while sum(x["Alive"] for x in ray.nodes()) < {n} and time.time() - t < 60:
            time.sleep(0.5)
        print(sum(x["Alive"] for x in ray.nodes()))
    """)
    nodes = subprocess.run([str(BIN / "python"), "-c", wait], capture_output=True, text=True, timeout=120)
    assert nodes.stdout.strip().endswith(str(n)), nodes.stderr


@pytest.fixture
def cluster_with_two_bad_nodes(project: Path, tmp_path_factory):
    """A head node that sees the project; a node (own mount namespace) on which the project's data/ is an
    empty tmpfs, what a node without the shared filesystem sees; and a node whose Python finds a vertical_dag
    that fails to import, what a node without the package installed gives."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    if shutil.which("unshare") is None or not _can_mount_privately(tmp_path_factory.mktemp("mount-probe")):
        pytest.skip("needs `unshare --mount` (root on Linux) to give a node a folder of its own")
    broken = tmp_path_factory.mktemp("broken") / "vertical_dag"
    broken.mkdir()
    (broken / "__init__.py").write_text('raise ImportError("vertical_dag is not installed on this node")\n')
    address = _start_head(tmp_path_factory.mktemp("ray"), 1)
    try:
        _join(address, empty_over=project / "data")
        _join(address, env={"PYTHONPATH": str(broken.parent)})
        _wait_for_nodes(address, 3)
        yield address
    finally:
        _stop_ray()


def test_nodes_that_do_not_see_the_data_folder_or_cannot_run_the_tasks_stop_the_stage_before_any_work(
        project: Path, cluster_with_two_bad_nodes: str):
    write_docs(project / "data/raw/docs/a.jsonl", 200, 1)
    params = project / "params.yaml"
    params.write_text(_on_ray(params.read_text(), cluster_with_two_bad_nodes))
    proc = run_cli("run", "ingest", "--no-gate", cwd=project, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert "2 node(s)" in err and f"cannot work on {project / 'data'} as this process sees it" in err
    assert "no work was started" in err
    # each node named, with what it found at the probe's path: an empty folder of its own; no package
    assert re.search(r"node [0-9a-f]{12} at [0-9.]+: FileNotFoundError: No such file or directory", err), err
    assert re.search(r"node [0-9a-f]{12} at [0-9.]+: its task failed: .*vertical_dag is not installed on this node",
                     err), err
    assert not list((project / "data/ingested").rglob("*.parquet"))
    assert not list((project / "data").glob(".node-probe-*"))  # the probe is removed
