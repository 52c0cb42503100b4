"""export: compressed copies of the fine-tuned model for CPUs, measured against the float32 model.

Reads data/models/finetuned/model and data/splits/test.parquet (held-out text for bits per character);
writes data/models/export/{int8/ (int8 weights + scales, safetensors), model-<gguf_type>.gguf,
export.json}. Params: the `export` section (and base_model.source/gguf_file, only to carry llama.cpp's
pre-tokenizer name over from a GGUF base model).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from ..modeling.evaluate import sample_texts
from ..records import write_json
from .context import StageContext
from .evaluate import test_texts

MAX_DOC_CHARS = 100_000  # documents are measured whole (max_eval_tokens bounds the cost)


def run(ctx: StageContext) -> dict[str, Any]:
    from ..serve.export import ExportOptions, export_model, pre_tokenizer_name

    p = ctx.params.export
    out = ctx.out
    src = ctx.input("finetune") / "model"
    if not p.enabled:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        write_json({"enabled": False}, out / "export.json")
        return {"enabled": False}
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"no fine-tuned model at {src}: run `vertical-dag run finetune` first")
    if p.threads:
        torch.set_num_threads(p.threads)
    every = test_texts(ctx.input("split"))
    texts, available = sample_texts(every, p.max_eval_docs, MAX_DOC_CHARS, ctx.params.project.seed), len(every)
    if not texts:
        ctx.log.warning("no test documents in the test split: sizes only, no bits/char or speed")
    pre = pre_tokenizer_name(ctx.params.base_model, ctx.project.root) if p.gguf else "default"
    opts = ExportOptions(int8=p.int8, int8_kernel=p.int8_kernel, gguf=p.gguf, gguf_type=p.gguf_type, gguf_pre=pre,
                         max_eval_tokens=p.max_eval_tokens, speed_new_tokens=p.speed_new_tokens)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    metrics = export_model(src, tmp, texts, opts)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    metrics = _repoint(metrics, tmp, out)
    metrics["test_docs_available"] = available
    write_json(metrics, out / "export.json")
    for name in ("int8", "int8_dynamic", "gguf"):
        m = metrics.get(name) or {}
        if "bits_per_char" in m:
            ctx.log.info("%s: %.1f MB (%.2fx float32), bits/char %.4f (%+.4f)%s", name, m["bytes"] / 1e6,
                         m.get("size_ratio") or 0, m["bits_per_char"], m["bpc_increase"],
                         f", {m['tokens_per_s']:.1f} tokens/s" if "tokens_per_s" in m else "")
    return metrics


def _repoint(metrics: dict[str, Any], tmp: Path, out: Path) -> dict[str, Any]:
    for m in metrics.values():
        if isinstance(m, dict) and isinstance(m.get("path"), str):
            m["path"] = m["path"].replace(str(tmp), str(out))
    return metrics
