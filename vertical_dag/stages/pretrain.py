"""Stage pretrain: continued pretraining of the base model on the train split (+ optional general replay).

Reads data/splits/{train,validation}.parquet and data/models/base/model; writes
  data/models/pretrained/model/          final checkpoint (safetensors, tokenizer, README.md model card)
  data/models/pretrained/checkpoints/    resume state (a killed run continues from here)
  data/models/pretrained/ledger/         documents that could not be trained on
  data/plots/pretrain_loss.csv           step, loss, lr, tokens, val_ppl (DVC plots)
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..modeling.card import model_card, train_languages
from ..modeling.load import load_model_folder, write_model_folder
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
from ..modeling.train import TrainConfig, history_csv, train
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
from . import STAGES, upstream
from .context import StageContext
from .metrics import ReasonCounts, contract_counts


def read_split(splits: Path, name: str, extra: tuple[str, ...] = ()) -> tuple[pa.Table, str]:
    """(doc_id, text) of one split, from <splits>/<name>.parquet or a folder of parts; plus a content hash.
    `extra` columns are read too where the split has them (the hash is of doc_id and text either way)."""
    file, folder = splits / f"{name}.parquet", splits / name
    if file.exists():
        names = pq.read_schema(file).names
        return pq.read_table(file, columns=["doc_id", "text", *(c for c in extra if c in names)]), file_sha256(file)
    if folder.is_dir():
        table = read_parts(folder, columns=["doc_id", "text", *extra])
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


def _replay(ctx: StageContext, tokenizer: Any, domain_tokens: int, notes: list[str]) -> tuple[Any, list[str], str | None]:
    """General text selected to the target token ratio (a held-out slice measures forgetting); notes say what went amiss."""
    p = ctx.params.pretrain
    general_texts: list[str] = []
    replay_path = (ctx.project.root / p.replay_path) if p.replay_path else None
    replay_hash = None
    if replay_path is not None and replay_path.exists():
        from ..plugins import load_registry

        general_texts = read_general_texts(replay_path, readers=load_registry(ctx.params.project.plugins, ctx.project.root).general_readers)
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
    return sel, general_texts, replay_hash


def _train_config(p: Any, n_blocks: int, base_sha256: str) -> TrainConfig:
    tokens_per_step = p.batch_size * p.grad_accum * p.block_size * int(os.environ.get("WORLD_SIZE", "1"))
    return TrainConfig(
        max_steps=_steps(p, tokens_per_step, n_blocks, p.block_size), batch_size=p.batch_size, grad_accum=p.grad_accum,
        lr=p.lr, min_lr_ratio=p.min_lr_ratio, warmup_steps=p.warmup_steps, weight_decay=p.weight_decay,
        grad_clip=p.grad_clip, eval_every=p.eval_every, eval_blocks=p.eval_blocks, checkpoint_every=p.checkpoint_every,
        keep_checkpoints=p.keep_checkpoints, log_every=p.log_every, seed=p.seed, device=p.device, precision=p.precision,
        compile=p.compile, extra_fingerprint={"base": base_sha256},
    )


def run(ctx: StageContext) -> dict[str, Any]:
    p = ctx.params.pretrain
    started = time.perf_counter()
    if p.threads:
        torch.set_num_threads(p.threads)
    base_dir = ctx.input("base_model") / "model"
    if not (base_dir / "config.json").exists():
        raise FileNotFoundError(f"{base_dir} not found: run `vertical-dag run base_model` first")
    base_info = read_json(ctx.input("base_model") / "source.json", default={}) or {}
    splits = ctx.input("split")
    rc_on = p.reading_comprehension.enabled
    train_tbl, train_hash = read_split(splits, "train", ("meta", "lang") if rc_on else ())
    val_tbl, val_hash = read_split(splits, "validation")

    model, tokenizer = load_model_folder(base_dir)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    texts = train_tbl.column("text").to_pylist()
    t0 = time.perf_counter()
    train_docs, dropped, kept = _tokenize_train(ctx, tokenizer, texts, train_tbl.column("doc_id").to_pylist())
    rc_metrics: dict[str, Any] = {}
    if rc_on:
        train_docs, rc_metrics = _reading_comprehension(ctx, tokenizer, train_tbl.take(kept), train_docs)
    domain_tokens = sum(len(d) + 1 for d in train_docs)
    val_docs = tokenize(tokenizer, val_tbl.column("text").to_pylist())

    notes: list[str] = []
    sel, general_texts, replay_hash = _replay(ctx, tokenizer, domain_tokens, notes)

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
    masking = cross_document_attention_blocked(model, eos)
    if not masking:
        notes.append("this model's attention ignores packed position ids: documents in a block can attend to each other")
        ctx.log.warning(notes[-1])
    ctx.log.info("packed %d documents (+%d general) into %d blocks of %d: efficiency %.4f, replay ratio %.4f",
                 len(train_docs), len(sel.docs), len(packed), p.block_size, packed.efficiency, realised)

    cfg = _train_config(p, len(packed), base_info.get("output_sha256", ""))
    ckpt_dir = ctx.out / "checkpoints"
    result = train(model, packed, val_packed, cfg, ckpt_dir, extra_val=extra)
    m = result.metrics

    metrics: dict[str, Any] = {
        **contract_counts(len(texts), len(train_docs), dropped),
        "validation_documents": val_tbl.num_rows,
        "block_size": p.block_size,
        "blocks": len(packed),
        "packing_efficiency": round(packed.efficiency, 6),
        "data_fingerprint": packed.fingerprint(),  # the exact training tokens, order and layout
        "padding_tokens": int(packed.input_ids.size - packed.real_tokens),  # the kept tail's padding, nothing dropped
        "document_masking": masking,
        "domain_tokens": packed.tokens_of(DOMAIN_SOURCE),
        "general_tokens": packed.tokens_of(GENERAL_SOURCE),
        "fertility_domain": fertility(tokenizer, texts),
        "fertility_general": fertility(tokenizer, general_texts) if general_texts else None,
        "replay_ratio_target": p.replay_ratio if general_texts else 0.0,
        "replay_ratio_realised": round(realised, 4),
        **rc_metrics,
        **m,
        "resumed_from_step": result.resumed_from,
        "tokenize_seconds": round(tokenize_seconds, 2),
    }
    if m["val_perplexity_base"] and m["val_perplexity_final"]:
        metrics["val_perplexity_gain"] = round(m["val_perplexity_base"] - m["val_perplexity_final"], 4)
    _write_outputs(ctx, model, tokenizer, result, metrics, base_info, notes,
                   {"train": train_hash, "validation": val_hash, "replay": replay_hash})
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    ctx.log.info("validation perplexity %.3f -> %.3f over %d tokens; %.1f tokens/s", m["val_perplexity_base"] or float("nan"),
                 m["val_perplexity_final"] or float("nan"), m["val_tokens"], m["tokens_per_s"] or 0.0)
    return metrics


def _tokenize_train(ctx: StageContext, tokenizer: Any, texts: list[str], ids: list[str]) -> tuple[list, ReasonCounts, list[int]]:
    """Token arrays of the train documents, and their rows; one with no tokens cannot be trained on and goes
    to the ledger."""
    docs = tokenize(tokenizer, texts)
    dropped, ledger = ReasonCounts(), []
    for i in (i for i, d in enumerate(docs) if len(d) == 0):
        ledger.append(LedgerEntry(ids[i], "pretrain", "dropped", "no_tokens", "text tokenises to nothing"))
        dropped.add("no_tokens", ids[i])
    if int(os.environ.get("RANK", "0")) == 0:
        write_parquet(ledger_table(ledger), ctx.ledger_dir / "train.parquet")
    kept = [i for i, d in enumerate(docs) if len(d)]
    return [docs[i] for i in kept], dropped, kept


def _reading_comprehension(ctx: StageContext, tokenizer: Any, table: pa.Table, docs: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Each train document's tokens followed by those of the comprehension tasks mined from it (AdaptLLM),
    and what was mined. Only train documents are mined: validation and test text never reaches training."""
    from ..modeling import reading_comprehension as rc
    from ..modeling.tasks import docs_from_rows
    from ..plugins import load_registry

    p = ctx.params.pretrain
    q = p.reading_comprehension
    fields = load_registry(ctx.params.project.plugins, ctx.project.root).doc_fields
    cfg = rc.RCConfig(q.max_tasks_per_doc, tuple(q.kinds), q.max_answer_chars, p.seed)
    suffixes, counts = rc.mine_corpus(docs_from_rows(table.to_pylist()), cfg, fields)
    suffix_tokens = tokenize(tokenizer, suffixes)
    added = sum(len(s) for s in suffix_tokens)
    out = [np.concatenate([d, s]) if len(s) else d for d, s in zip(docs, suffix_tokens, strict=True)]
    total = sum(len(d) + 1 for d in out)
    ctx.log.info("reading comprehension: %d tasks %s, %d tokens (%.1f%% of the domain tokens)",
                 sum(counts.values()), dict(sorted(counts.items())), added, 100 * added / max(1, total))
    return out, {"rc_tasks": sum(counts.values()), "rc_tasks_by_kind": {k: counts.get(k, 0) for k in q.kinds},
                 "rc_documents_with_tasks": sum(1 for s in suffixes if s), "rc_tokens": added,
                 "rc_token_share": round(added / max(1, total), 4)}


def _write_outputs(ctx: StageContext, model: Any, tokenizer: Any, result: Any, metrics: dict[str, Any],
                   base_info: dict[str, Any], notes: list[str], hashes: dict[str, str | None]) -> None:
    """The model folder with its card, the loss curve, and what the run was made from (first rank only)."""
    p, root = ctx.params.pretrain, ctx.project.root
    gates = {s: g for s in upstream(ctx.spec.name) if not STAGES[s].training
             and (g := read_json(root / STAGES[s].gate_file)) is not None}  # the data gates that ran
    splits = ctx.spec.reads[0]
    card = model_card(
        title=f"{ctx.params.project.name}: continued pretraining",
        base={k: base_info.get(k) for k in ("source", "kind", "sha256", "architecture", "parameters", "is_instruct", "warnings")},
        data={"train": f"{STAGES[splits].out}/train.parquet sha256 {hashes['train']}",
              "validation": f"{STAGES[splits].out}/validation.parquet sha256 {hashes['validation']}",
              "replay": f"{p.replay_path} sha256 {hashes['replay']}" if hashes["replay"] else "none"},
        params=p.model_dump(), metrics={k: v for k, v in metrics.items() if not isinstance(v, dict | list)}, gates=gates,
        notes=notes, role="pretrained", root=root,
        languages=train_languages(ctx.input("split"), ctx.params.normalize.allowed_languages))
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only the first rank writes
        write_model_folder(model, tokenizer, ctx.out / "model", card)
        write_text(history_csv(result.history), root / ctx.spec.plots[0].path)
        write_json({"train_sha256": hashes["train"], "validation_sha256": hashes["validation"],
                    "replay_sha256": hashes["replay"], "base_sha256": base_info.get("output_sha256"),
                    "steps": result.metrics["steps"]}, ctx.out / "state.json")
