"""Bits per character: how wide is the interval over documents, and what does it cost?

Baseline (the scheme the evaluate stage used before): the first test documents of a seeded shuffle, scored
whole, until a token budget (4,000 domain / 2,000 general tokens); longer documents are skipped, batches
of 4. Candidates: a seeded sample of N documents, each cut to its first C characters, batches of 16 (what
evaluate does now). Each row prints bits/char, the 95% bootstrap interval over documents, its half-width
relative to the estimate, seconds, tokens, and both as ratios against the baseline run side by side.

Run in a project where the example has been split and imported (`vertical-dag run split`, `... base_model`):
    python benchmarks/eval_bpc.py --project /path/to/example [--model data/models/base/model] \
        [--corpora domain general] [--samples 120x48 300x48 60x96]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from vertical_dag.modeling import evaluate as E
from vertical_dag.modeling.load import load_model_folder
from vertical_dag.params import load_params
from vertical_dag.plugins import load_registry
from vertical_dag.stages.evaluate import read_general, test_texts


def first_within_budget(texts: list[str], tok, budget: int, seed: int) -> list[str]:
    """The baseline's documents: a seeded shuffle, whole documents, until the token budget is reached."""
    order = list(texts)
    random.Random(seed).shuffle(order)
    return E.within_budget(tok, order, budget)


def measure(model, tok, texts: list[str], batch_size: int) -> dict[str, float]:
    t0 = time.perf_counter()
    s = E.score_texts(model, tok, texts, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    lo, hi = s.bpc_ci(samples=2000)
    return {"docs": s.docs, "tokens": int(s.tokens.sum()), "chars": int(s.chars.sum()), "seconds": round(seconds, 2),
            "bpc": round(s.bpc, 4), "ci": [lo, hi], "rel_half_width": round((hi - lo) / 2 / s.bpc, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, required=True)
    ap.add_argument("--model", default="data/models/base/model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--corpora", nargs="+", default=["domain", "general"], choices=["domain", "general"])
    ap.add_argument("--samples", nargs="+", default=["120x48", "300x48", "60x96"],
                    help="candidate samples as DOCSxCHARS")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = args.project.resolve()
    params = load_params(root / "params.yaml")
    model, tok = load_model_folder(root / args.model)
    model.eval()
    general, _ = read_general(root, params.evaluate.general_corpus, params, load_registry(params.project.plugins, root))
    corpora = {"domain": (test_texts(root), 4000), "general": (general, 2000)}
    for name in args.corpora:
        texts, budget = corpora[name]
        base = measure(model, tok, first_within_budget(texts, tok, budget, 1234), batch_size=4)
        print(json.dumps({"corpus": name, "run": f"baseline: first whole docs within {budget} tokens", **base}), flush=True)
        for n, chars in (map(int, spec.split("x")) for spec in args.samples):
            row = measure(model, tok, E.sample_texts(texts, n, chars, 1234), batch_size=16)
            ratios = {"width_vs_baseline": round(row["rel_half_width"] / base["rel_half_width"], 3),
                      "seconds_vs_baseline": round(row["seconds"] / max(base["seconds"], 1e-9), 3),
                      "tokens_vs_baseline": round(row["tokens"] / base["tokens"], 3)}
            print(json.dumps({"corpus": name, "run": f"sample {n} docs x first {chars} chars", **row, **ratios}), flush=True)
    print(json.dumps({"note": "rel_half_width: half the 95% interval over documents / the estimate (target <= 0.02)",
                      "threads": args.threads, "numpy": np.__version__}), flush=True)


if __name__ == "__main__":
    main()
