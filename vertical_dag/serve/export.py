"""Compressed copies of a model for CPU inference, each measured against the float32 original.

Writes an int8 folder (modeling/quantize.py) and a GGUF file (modeling/gguf_export.py), then loads each
back the way a user would (the int8 folder with its int8 kernels, the GGUF through transformers' GGUF
reader: a real round trip) and reports file size, bits per character on held-out text, and greedy
tokens/s (float32 and int8; a GGUF's speed belongs to llama.cpp, which is not run here).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..modeling.decode import Row, decode
from ..modeling.evaluate import score_texts, within_budget
from ..modeling.generate import GenerationSettings

log = logging.getLogger("vertical_dag.serve.export")


@dataclass(frozen=True)
class ExportOptions:
    int8: bool = True
    int8_kernel: str = "weight_only"  # the folder's default kernel; both are measured
    gguf: bool = True
    gguf_type: str = "q8_0"
    gguf_pre: str = "default"  # llama.cpp pre-tokenizer name
    max_eval_tokens: int = 1500
    speed_new_tokens: int = 16


def pre_tokenizer_name(base_model: Any, root: Path) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer: a GGUF base model already carries it; otherwise
    "default" (llama.cpp then pre-tokenizes GPT-2 style and says so when it loads the file)."""
    from ..modeling.gguf_export import gguf_pre_tokenizer
    from ..modeling.load import ModelImportError, detect_kind

    try:
        kind, path = detect_kind(base_model.source, base_model.gguf_file, root)
    except ModelImportError:
        return "default"
    return (gguf_pre_tokenizer(path) or "default") if kind == "gguf" and path is not None else "default"


def tokens_per_second(model: Any, tokenizer: Any, prompt: str, new_tokens: int, repeats: int = 3) -> float:
    """Greedy decoding speed of one request (batch of one), prompt cut to 64 tokens, after a warm-up;
    the median of `repeats` runs (a shared machine's load swings single runs)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][:64] or [tokenizer.eos_token_id]
    settings = GenerationSettings(max_new_tokens=new_tokens, repetition_penalty=1.0)
    decode(model, tokenizer, [Row(ids=ids, settings=GenerationSettings(max_new_tokens=2))], [])
    rates = []
    for _ in range(repeats):
        row = Row(ids=ids, settings=settings)
        started = time.perf_counter()
        decode(model, tokenizer, [row], [])  # no stop tokens: always new_tokens long
        rates.append(len(row.new) / (time.perf_counter() - started))
    return statistics.median(rates)


def measure(model: Any, tokenizer: Any, texts: Sequence[str], opts: ExportOptions, *, speed: bool = True) -> dict[str, Any]:
    score = score_texts(model, tokenizer, within_budget(tokenizer, texts, opts.max_eval_tokens))
    out: dict[str, Any] = {"bits_per_char": round(score.bpc, 4), "scored_tokens": int(score.tokens.sum()),
                           "scored_chars": int(score.chars.sum())}
    if speed and texts:
        out["tokens_per_s"] = round(tokens_per_second(model, tokenizer, texts[0], opts.speed_new_tokens), 2)
    return out


def export_model(src: Path, out: Path, texts: Sequence[str], opts: ExportOptions) -> dict[str, Any]:
    """Write the copies under `out` and return their metrics, float32 first (the baseline)."""
    from ..modeling.generate import load_for_inference

    model, tok = load_for_inference(src, "cpu")
    weights = sum(p.stat().st_size for p in src.glob("*.safetensors"))
    metrics: dict[str, Any] = {"source": str(src), "eval_docs": len(texts), "threads": torch.get_num_threads(),
                               "float32": {"bytes": weights, **measure(model, tok, texts, opts)}}
    base_bpc = metrics["float32"]["bits_per_char"]
    if opts.int8:
        from ..modeling.quantize import load_int8, save_int8

        manifest = save_int8(model, tok, out / "int8", kernel=opts.int8_kernel)
        for kernel in ("weight_only", "dynamic"):
            q_model, q_tok = load_int8(out / "int8", kernel=kernel)
            key = "int8" if kernel == "weight_only" else "int8_dynamic"
            metrics[key] = {"bytes": manifest["file_bytes"], "path": str(out / "int8"), "kernel": kernel,
                            "default": kernel == opts.int8_kernel, **measure(q_model, q_tok, texts, opts)}
            del q_model
    if opts.gguf:
        from ..modeling.gguf_export import GGUFUnsupported, load_gguf, write_gguf

        path = out / f"model-{opts.gguf_type}.gguf"
        try:
            info = write_gguf(model, tok, path, qtype=opts.gguf_type, pre=opts.gguf_pre, name=src.parent.name)
        except GGUFUnsupported as exc:
            log.warning("no GGUF file: %s", exc)
            metrics["gguf"] = {"skipped": str(exc)}
        else:
            g_model, g_tok = load_gguf(path)
            same_tokens = all(g_tok(t[:200])["input_ids"] == tok(t[:200])["input_ids"] for t in texts[:20])
            metrics["gguf"] = {"bytes": info["bytes"], "path": str(path), "qtype": opts.gguf_type,
                               "tokenizer_round_trip": same_tokens, **measure(g_model, g_tok, texts, opts, speed=False)}
            del g_model
    for name in ("int8", "int8_dynamic", "gguf"):
        m = metrics.get(name, {})
        if "bits_per_char" in m:
            m["bpc_increase"] = round(m["bits_per_char"] - base_bpc, 4)
            m["size_ratio"] = round(m["bytes"] / weights, 4) if weights else None
        if "tokens_per_s" in m:
            m["speedup"] = round(m["tokens_per_s"] / metrics["float32"]["tokens_per_s"], 3)
    return metrics
