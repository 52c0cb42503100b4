"""The command-line tools a user brings: `dg` on this repo and on an init project, selection strings, `dvc exp
run -S`, `dvc push` to the remote `init --remote` configured, `vertical-dag --version`. All real commands."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from vertical_dag import __version__

from .conftest import BIN, REPO, run_cli
from .dagster_project import write_batch


def tool(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A console script of this environment (dg, dvc), run as a user would from the project folder."""
    env = {**os.environ, "VIRTUAL_ENV": str(BIN.parent)}
    proc = subprocess.run([str(BIN / name), *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{name} {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def commit(root: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, capture_output=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message], cwd=root,
                   check=True, capture_output=True)


def test_this_repo_is_a_dg_project() -> None:
    out = tool("dg", "check", "defs", cwd=REPO)
    assert "All definitions loaded successfully" in out.stdout + out.stderr


def test_init_project_works_with_dg_selection_strings_and_dvc_exp_run(project: Path) -> None:
    assert (project / "pyproject.toml").is_file() and (project / "vertical_defs" / "__init__.py").is_file()
    tool("dg", "check", "defs", cwd=project)
    listed = json.loads(tool("dg", "list", "defs", "--json", cwd=project).stdout)
    keys = {a["asset_key"] for a in listed["assets"]}
    assert {"raw_sources", "raw_documents", "splits", "eval_report"} <= keys

    write_batch(project, "1990s", 60, seed=1)
    write_batch(project, "2000s", 60, seed=2)
    tool("dvc", "repro", "split", cwd=project)
    commit(project, "data built")
    # a selection string goes through Dagster's ANTLR parser (it needs antlr4-python3-runtime 4.13)
    launched = tool("dg", "launch", "--assets", "key:splits", cwd=project)
    log = launched.stdout + launched.stderr
    assert "RUN_SUCCESS" in log and "ord() expected" not in log
    assert 'Finished execution of step "splits"' in log

    # -S goes through DVC's hydra (antlr 4.9, in DVC's own environment)
    tool("dvc", "exp", "run", "-S", "pretrain.lr=0.0001", "split", cwd=project)
    assert yaml.safe_load((project / "params.yaml").read_text())["pretrain"]["lr"] == 0.0001
    shown = json.loads(tool("dvc", "exp", "show", "--json", cwd=project).stdout)
    exps = [e for row in shown for e in (row.get("experiments") or [])]
    lrs = [r["data"]["params"]["params.yaml"]["data"]["pretrain"]["lr"] for e in exps for r in e["revs"]]
    assert 0.0001 in lrs


def test_init_remote_makes_dvc_push_work(tmp_path: Path) -> None:
    root, remote = tmp_path / "proj", tmp_path / "remote"
    run_cli("init", str(root), "--remote", str(remote), cwd=tmp_path)
    (root / "dvc_plots").mkdir()
    (root / "dvc_plots" / "index.html").write_text("<html></html>")  # `dvc plots show` output: never committed
    assert subprocess.run(["git", "check-ignore", "-q", "dvc_plots/index.html"], cwd=root).returncode == 0
    config = (root / ".dvc" / "config").read_text()
    assert "remote = storage" in config and str(remote) in config
    write_batch(root, "1990s", 40, seed=3)
    tool("dvc", "repro", "ingest", cwd=root)
    # data/ingested still holds raw text with its PII: dvc push leaves it out until the project says so
    assert "Everything is up to date" in tool("dvc", "push", cwd=root).stdout
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("push_unredacted: false", "push_unredacted: true"))
    run_cli("dvc-yaml", cwd=root)
    pushed = tool("dvc", "push", cwd=root)
    assert "pushed" in pushed.stdout
    assert any(p.is_file() for p in remote.rglob("*")), "nothing reached the remote"
    bad = run_cli("init", str(tmp_path / "other"), "--remote", "nosuchscheme://x", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "--remote 'nosuchscheme://x'" in bad.stderr


def test_version() -> None:
    out = run_cli("--version", cwd=REPO)
    assert out.stdout.strip() == f"vertical-dag {__version__}"
