#!/usr/bin/env bash
# Quick start, command 2: install and run the test suite (real Dagster, DVC, Great Expectations, torch).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ruff check vertical_dag vertical_dag_china_law tests benchmarks
python -m pytest "$@"
