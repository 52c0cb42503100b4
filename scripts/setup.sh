#!/usr/bin/env bash
# Create .venv (Python 3.11) and install vertical_dag with its test extras; idempotent.
# torch is pinned to 2.13.0 in pyproject.toml so pip takes the CPU build instead of a multi-GB CUDA one.
#
# DVC is a command-line tool here, installed in its own environment (.venv/tools/dvc) and linked as
# .venv/bin/dvc, the way pipx / `uv tool` install tools: DVC's hydra-core pins antlr4-python3-runtime 4.9,
# while Dagster's asset-selection parser needs 4.13, and one environment cannot hold both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=.venv/.vertical_dag-installed
WANT="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[dev]"
  DVC_SPEC="$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["tool"]["vertical_dag"]["dvc"])')"
  if [ ! -x .venv/tools/dvc/bin/python ]; then
    "$PY" -m venv .venv/tools/dvc
  fi
  .venv/tools/dvc/bin/python -m pip install -q --upgrade pip
  .venv/tools/dvc/bin/python -m pip install -q "$DVC_SPEC"
  # a .venv made before DVC had its own environment: drop that copy (its hydra would see antlr 4.13)
  if .venv/bin/python -m pip show -q dvc >/dev/null 2>&1; then .venv/bin/python -m pip uninstall -y -q dvc; fi
  ln -sfn ../tools/dvc/bin/dvc .venv/bin/dvc
  echo "$WANT" > "$STAMP"
fi
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"  # as `source .venv/bin/activate` would
