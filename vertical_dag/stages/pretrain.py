"""Stage pretrain: continued pretraining of the base model on the train split (+ optional general replay).

Reads data/splits/{train,validation}.parquet and data/models/base/model; writes
  data/models/pretrained/model/          final checkpoint (safetensors, tokenizer, README.md model card)
  data/models/pretrained/checkpoints/    resume state (a killed run continues from here)
  data/models/pretrained/ledger/         documents that could not be trained on
  data/plots/pretrain_loss.csv           step, loss, lr, tokens, val_ppl (DVC plots)
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..modeling.card import model_card
from ..modeling.load import load_model_folder, readable
from ..modeling.packing import (
    DOMAIN_SOURCE,
    GENERAL_SOURCE,
    Packed,
    cross_document_attention_blocked,
    fertility,
    pack,
    tokenize,
)
from ..modeling.replay import read_general_texts, select_replay
from ..modeling.train import TrainConfig, train
from ..records import (
    LedgerEntry,
    file_sha256,
    ledger_table,
    read_json,
    read_parts,
    write_json,
    write_parquet,
    write_text,
)
from .context import StageContext

PLOT_FILE = "data/plots/pretrain_loss.csv"


def read_split(splits: Path, name: str) -> tuple[pa.Table, str]:
    """(doc_id, text) of one split, from <splits>/<name>.parquet or a folder of parts; plus a content hash."""
    file, folder = splits / f"{name}.parquet", splits / name
    if file.exists():
        return pq.read_table(file, columns=["doc_id", "text"]), file_sha256(file)
    if folder.is_dir():
        table = read_parts(folder, columns=["doc_id", "text"])
        digest = hashlib.sha256("\n".join(table.column("doc_id").to_pylist()).encode())
        digest.update("\n".join(table.column("text").to_pylist()).encode())
        return table, digest.hexdigest()
    raise FileNotFoundError(f"{file} not found: run the split stage first (`vertical-dag run split`)")


def _steps(p: Any, tokens_per_step: int, n_blocks: int, block_size: int) -> int:
    if p.max_steps is not None:
        return p.max_steps
    if p.max_tokens is not None:
        return max(1, math.ceil(p.max_tokens / tokens_per_step))
    return max(1, math.ceil(p.epochs * n_blocks * block_size / tokens_per_step))


def _loss_csv(history: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "loss", "lr", "tokens", "val_ppl"])
    for h in history:
        w.writerow([h["step"], h["loss"], f"{h['lr']:.6g}", h["tokens"], "" if h["val_ppl"] is None else round(h["val_ppl"], 4)])
    return buf.getvalue()


def _write_model(out: Path, model: Any, tokenizer: Any, card: str) -> None:
    """The final checkpoint: a plain HF folder (safetensors, tokenizer, model card) that the fine-tuning and
    evaluation stages load with from_pretrained; written beside and renamed, so it is never half there."""
    model_dir, tmp = out / "model", out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.to("cpu").save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(card, encoding="utf-8")
    readable(tmp)
    shutil.rmtree(model_dir, ignore_errors=True)
    tmp.rename(model_dir)


def run(ctx: StageContext) -> dict[str, Any]:
    p = ctx.params.pretrain
    root = ctx.project.root
    started = time.perf_counter()
    if p.threads:
        torch.set_num_threads(p.threads)
    base_dir = ctx.project.models_dir / "base" / "model"
    if not (base_dir / "config.json").exists():
        raise FileNotFoundError(f"{base_dir} not found: run `vertical-dag run base_model` first")
    base_info = read_json(ctx.project.models_dir / "base" / "source.json", default={}) or {}
    splits = ctx.project.data / "splits"
    train_tbl, train_hash = read_split(splits, "train")
    val_tbl, val_hash = read_split(splits, "validation")

    model, tokenizer = load_model_folder(base_dir, objective=base_info.get("objective"))
    objective = base_info.get("objective", "clm")
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    # Tokenise; a document with no tokens cannot be trained on and goes to the ledger.
    texts = train_tbl.column("text").to_pylist()
    ids = train_tbl.column("doc_id").to_pylist()
    t0 = time.perf_counter()
    train_docs = tokenize(tokenizer, texts)
    empty = [i for i, d in enumerate(train_docs) if len(d) == 0]
    ledger = [LedgerEntry(ids[i], "pretrain", "dropped", "no_tokens", "text tokenises to nothing") for i in empty]
    if int(os.environ.get("RANK", "0")) == 0:
        write_parquet(ledger_table(ledger), ctx.ledger_dir / "train.parquet")
    train_docs = [d for d in train_docs if len(d)]
    domain_tokens = sum(len(d) + 1 for d in train_docs)
    val_docs = tokenize(tokenizer, val_tbl.column("text").to_pylist())

    # Replay of general text, selected to the target token ratio; a held-out slice measures forgetting.
    general_texts: list[str] = []
    replay_path = (root / p.replay_path) if p.replay_path else None
    notes: list[str] = []
    replay_hash = None
    if replay_path is not None and replay_path.exists():
        from ..plugins import load_registry

        general_texts = read_general_texts(replay_path, readers=load_registry(ctx.params.project.plugins, root).general_readers)
        replay_hash = file_sha256(replay_path) if replay_path.is_file() else None
    elif replay_path is not None:
        notes.append(f"replay text {p.replay_path} not found: trained without replay (for the example: "
                     "`vertical-dag example fetch` provides it)")
        ctx.log.warning(notes[-1])
    general_docs = tokenize(tokenizer, general_texts) if general_texts else []
    sel = select_replay(general_docs, domain_tokens, p.replay_ratio if general_docs else 0.0, p.seed, p.replay_heldout_docs)
    if sel.repeated:
        notes.append(f"general text ({sel.available_tokens} tokens) is smaller than the replay target ({sel.target_tokens}): it was repeated")
        ctx.log.warning(notes[-1])

    # Shuffle documents (domain and general together) so replay is spread evenly through the stream, then pack.
    all_docs = train_docs + sel.docs
    sources = np.array([DOMAIN_SOURCE] * len(train_docs) + [GENERAL_SOURCE] * len(sel.docs), dtype=np.uint8)
    order = np.random.default_rng(p.seed).permutation(len(all_docs))
    packed = pack([all_docs[i] for i in order], p.block_size, eos, pad, sources[order])
    val_packed = pack(val_docs, p.block_size, eos, pad)
    extra: dict[str, Packed] = {}
    if sel.heldout:
        extra["general"] = pack(sel.heldout, p.block_size, eos, pad)
    tokenize_seconds = time.perf_counter() - t0
    realised = packed.tokens_of(GENERAL_SOURCE) / max(1, packed.real_tokens)
    masking = cross_document_attention_blocked(model, eos) if objective == "clm" else True
    if not masking:
        notes.append("this model's attention ignores packed position ids: documents in a block can attend to each other")
        ctx.log.warning(notes[-1])
    ctx.log.info("packed %d documents (+%d general) into %d blocks of %d: efficiency %.4f, replay ratio %.4f",
                 len(train_docs), len(sel.docs), len(packed), p.block_size, packed.efficiency, realised)

    tokens_per_step = p.batch_size * p.grad_accum * p.block_size * int(os.environ.get("WORLD_SIZE", "1"))
    cfg = TrainConfig(
        max_steps=_steps(p, tokens_per_step, len(packed), p.block_size), batch_size=p.batch_size, grad_accum=p.grad_accum,
        lr=p.lr, min_lr_ratio=p.min_lr_ratio, warmup_steps=p.warmup_steps, weight_decay=p.weight_decay,
        grad_clip=p.grad_clip, eval_every=p.eval_every, eval_blocks=p.eval_blocks, checkpoint_every=p.checkpoint_every,
        keep_checkpoints=p.keep_checkpoints, log_every=p.log_every, seed=p.seed, device=p.device, precision=p.precision,
        compile=p.compile, objective=objective, mask_token_id=getattr(tokenizer, "mask_token_id", None),
        extra_fingerprint={"base": base_info.get("output_sha256", "")},
    )
    ckpt_dir = ctx.out / "checkpoints"
    result = train(model, packed, val_packed, cfg, ckpt_dir, extra_val=extra)
    m = result.metrics

    metrics: dict[str, Any] = {
        "documents_in": len(texts),
        "documents_out": len(train_docs),
        "dropped": len(empty),
        "quarantined": 0,
        "drops_by_reason": {"no_tokens": len(empty)} if empty else {},
        "examples_by_reason": {"no_tokens": [ids[i] for i in empty[:5]]} if empty else {},
        "validation_documents": val_tbl.num_rows,
        "block_size": p.block_size,
        "blocks": len(packed),
        "packing_efficiency": round(packed.efficiency, 6),
        "padding_tokens": int(packed.input_ids.size - packed.real_tokens),  # the kept tail's padding, nothing dropped
        "document_masking": masking,
        "domain_tokens": packed.tokens_of(DOMAIN_SOURCE),
        "general_tokens": packed.tokens_of(GENERAL_SOURCE),
        "fertility_domain": fertility(tokenizer, texts),
        "fertility_general": fertility(tokenizer, general_texts) if general_texts else None,
        "replay_ratio_target": p.replay_ratio if general_docs else 0.0,
        "replay_ratio_realised": round(realised, 4),
        **m,
        "resumed_from_step": result.resumed_from,
        "tokenize_seconds": round(tokenize_seconds, 2),
        "objective": objective,
    }
    if m["val_perplexity_base"] and m["val_perplexity_final"]:
        metrics["val_perplexity_gain"] = round(m["val_perplexity_base"] - m["val_perplexity_final"], 4)
    gates = {f.stem: read_json(f) for f in sorted(ctx.project.gates_dir.glob("*.json")) if f.stem in ("ingest", "dedup", "normalize", "split")}
    gates["pretrain (inline)"] = {"success": bool(metrics.get("val_perplexity_gain", 0) > 0), "expectations": [
        {"name": "val_perplexity_final < val_perplexity_base", "success": bool(metrics.get("val_perplexity_gain", 0) > 0)}]}
    card = model_card(
        title=f"{ctx.params.project.name}: continued pretraining",
        base={k: base_info.get(k) for k in ("source", "kind", "sha256", "architecture", "parameters", "is_instruct", "warnings")},
        data={"train": f"data/splits/train.parquet sha256 {train_hash}", "validation": f"data/splits/validation.parquet sha256 {val_hash}",
              "replay": f"{p.replay_path} sha256 {replay_hash}" if replay_hash else "none"},
        params=p.model_dump(), metrics={k: v for k, v in metrics.items() if not isinstance(v, dict | list)}, gates=gates, notes=notes)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only the first rank writes
        _write_model(ctx.out, model, tokenizer, card)
        write_text(_loss_csv(result.history), root / PLOT_FILE)
        write_json({"train_sha256": train_hash, "validation_sha256": val_hash, "replay_sha256": replay_hash,
                    "base_sha256": base_info.get("output_sha256"), "steps": cfg.max_steps}, ctx.out / "state.json")
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    ctx.log.info("validation perplexity %.3f -> %.3f over %d tokens; %.1f tokens/s", m["val_perplexity_base"] or float("nan"),
                 m["val_perplexity_final"] or float("nan"), m["val_tokens"], m["tokens_per_s"] or 0.0)
    return metrics
