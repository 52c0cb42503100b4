"""finetune: supervised fine-tuning on the user's instruction files and tasks generated from the corpus.

Reads data/splits/{train,validation,test}.parquet and the pretrained (or base) model; writes
data/models/finetuned/{model/ (standalone safetensors), loss.csv, tasks/{train,validation,eval}.jsonl,
ledger/}. Items from validation/test documents never reach training: test items become the held-out eval
set the evaluate stage scores. A malformed user record is quarantined with file:line and the reason.
Training is pretraining's loop (modeling/train.py) on examples packed whole; a crashed run resumes from
data/models/finetuned/checkpoint/. Whether anything changed is DVC's to decide.
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..modeling import tasks as T
from ..modeling.card import finetuned_card
from ..modeling.packing import Packed, pack_whole
from ..modeling.task_files import read_task_file
from ..plugins import load_registry
from ..records import LedgerEntry, ledger_table, write_parquet, write_text
from .context import StageContext

STAGE = "finetune"
PLOT_FILE = "data/plots/finetune_loss.csv"
SPLITS = ("train", "validation", "test")


def read_split_docs(splits_dir: Path) -> list[T.Doc]:
    import pyarrow.parquet as pq

    docs: list[T.Doc] = []
    for name in SPLITS:
        path = splits_dir / f"{name}.parquet"
        if not path.exists():
            continue
        cols = [c for c in ("doc_id", "text", "meta", "lang", "split") if c in pq.read_schema(path).names]
        rows = pq.read_table(path, columns=cols).to_pylist()
        for r in rows:
            r["split"] = name  # the file decides; a stray column value cannot move a document into training
        docs.extend(T.docs_from_rows(rows))
    return docs


def init_model_dir(ctx: StageContext) -> Path:
    root = ctx.project.root
    pre, base = root / "data/models/pretrained/model", root / "data/models/base/model"
    if ctx.params.finetune.init_from == "pretrained" and (pre / "config.json").exists():
        return pre
    if ctx.params.finetune.init_from == "pretrained":
        ctx.log.warning("no pretrained checkpoint at %s: fine-tuning the base model instead", pre)
    if not (base / "config.json").exists():
        raise FileNotFoundError(f"no model to fine-tune: neither {pre} nor {base} exists (run base_model / pretrain first)")
    return base


def user_files(root: Path, patterns: list[str]) -> list[Path]:
    found: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(str(root / pat), recursive=True))
        found.extend(Path(h) for h in hits if Path(h).is_file())
    return sorted(set(found))


@dataclass
class TaskMix:
    """The instruction items of one run: the training mix, validation items and the held-out eval set."""

    train: list[T.TaskItem]
    validation: list[T.TaskItem]
    held_out: list[T.TaskItem]
    user: list[T.TaskItem]
    files: list[Path]
    ledger: list[LedgerEntry]  # malformed user records (quarantined) and user records the mix left out
    malformed: int
    chosen_user: set[str]


def build_items(ctx: StageContext, docs: list[T.Doc]) -> TaskMix:
    """Tasks generated per split by the built-in and plugin generators, mixed by weight with the user's files.

    Items of validation/test documents never reach training; a label task is balanced over its labels.
    """
    p, root = ctx.params.finetune, ctx.project.root
    registry = load_registry(ctx.params.project.plugins, root)
    weights = {name: p.task_weights.get(name, 1.0) for name in registry.task_names}  # a task not listed weighs 1
    by_split: dict[str, dict[str, list[T.TaskItem]]] = {}
    for split in SPLITS:
        part = [d for d in docs if d.split == split]
        by_split[split] = T.generate_tasks(part, registry.tasks, fields=registry.doc_fields,
                                           max_context_chars=p.max_context_chars, max_answer_chars=p.max_answer_chars,
                                           seed=p.seed)
    ledger: list[LedgerEntry] = []
    user_items: list[T.TaskItem] = []
    files = user_files(root, p.instruction_files)
    for f in map(read_task_file, files):
        user_items += f.items
        for line, reason in f.bad:
            ledger.append(LedgerEntry(f"{f.path.name}:{line}", STAGE, "quarantined", reason.split(":")[0],
                                      f"{ctx.project.rel(f.path)}:{line}: {reason}"))
    malformed = len(ledger)
    train_items, _ = T.mix({**by_split["train"], T.USER_TASK: user_items}, weights, p.max_train_items, p.seed)
    val_items, _ = T.mix(by_split["validation"], weights, max(8, p.max_train_items // 20), p.seed)
    eval_items = T.eval_sample(by_split["test"], p.eval_items_per_task, p.seed)
    chosen_user = {it.doc_id for it in train_items if it.task == T.USER_TASK}
    for it in user_items:
        if it.doc_id not in chosen_user:
            ledger.append(LedgerEntry(it.doc_id, STAGE, "dropped", "not_sampled", "left out by the task weights / max_train_items"))
    return TaskMix(train_items, val_items, eval_items, user_items, files, ledger, malformed, chosen_user)


def run(ctx: StageContext) -> dict[str, Any]:
    from ..modeling import sft

    p = ctx.params.finetune
    root, out = ctx.project.root, ctx.out
    started = time.perf_counter()
    init_dir = init_model_dir(ctx)
    docs = read_split_docs(root / "data/splits")
    if not docs:
        raise FileNotFoundError(f"no splits in {root / 'data/splits'} (run the split stage first)")

    # 1. instruction data: generated per split (built-in + plugin tasks) + the user's files (train only)
    mixed = build_items(ctx, docs)
    train_items, val_items, eval_items, ledger = mixed.train, mixed.validation, mixed.held_out, mixed.ledger
    user_items, malformed, files, chosen_user = mixed.user, mixed.malformed, mixed.files, mixed.chosen_user

    # 2. encode with the chat template; labels on responses only
    tok_model_dir = init_dir
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tok_model_dir))
    examples, kept = [], []
    for it in train_items:
        try:
            ids, labels = sft.encode_chat(tokenizer, it.chat(), p.system_prompt)
        except sft.TemplateError as exc:
            ledger.append(LedgerEntry(it.doc_id, STAGE, "quarantined", "bad_chat", str(exc)))
            continue
        if len(ids) > p.block_size:
            ledger.append(LedgerEntry(it.doc_id, STAGE, "dropped", "too_long",
                                      f"{it.task}: {len(ids)} tokens > block_size {p.block_size}"))
            continue
        examples.append((ids, labels))
        kept.append(it)
    val_examples = [e for e in (sft.encode_chat(tokenizer, it.chat(), p.system_prompt) for it in val_items)
                    if len(e[0]) <= p.block_size]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if not examples:
        raise ValueError("no training examples fit in block_size; raise finetune.block_size or check the task weights")
    blocks = pack_whole(examples, p.block_size, pad, p.packing)
    val_blocks = pack_whole(val_examples, p.block_size, pad, p.packing)

    (out / "tasks").mkdir(parents=True, exist_ok=True)
    T.write_items(kept, out / "tasks/train.jsonl")
    T.write_items(val_items, out / "tasks/validation.jsonl")
    T.write_items(eval_items, out / "tasks/eval.jsonl")
    write_parquet(ledger_table(ledger), out / "ledger/finetune.parquet")
    # in = every user record (good or malformed) + the generated items the mix chose
    counts = _counts(len(user_items) + malformed + len(train_items) - len(chosen_user), len(kept), ledger)

    # 3. train (resuming from out/checkpoint when the same run crashed before)
    ctx.log.info("fine-tuning %s (%s) on %d examples in %d blocks of %d tokens; %d held-out eval items",
                 ctx.project.rel(init_dir), p.method, len(kept), len(blocks), p.block_size, len(eval_items))
    trained = train_and_save(ctx, init_dir, tokenizer, blocks, val_blocks)
    by_task: dict[str, int] = {}
    for it in kept:
        by_task[it.task] = by_task.get(it.task, 0) + 1
    eval_by_task: dict[str, int] = {}
    for it in eval_items:
        eval_by_task[it.task] = eval_by_task.get(it.task, 0) + 1
    metrics = {
        **counts,
        "init_model": ctx.project.rel(init_dir),
        "method": p.method,
        "train_examples": len(kept),
        "train_blocks": len(blocks),
        "train_items_by_task": by_task,
        "eval_items": len(eval_items),
        "eval_items_by_task": eval_by_task,
        "user_files": [ctx.project.rel(f) for f in files],
        **trained,
    }
    write_text(finetuned_card(root, init_dir, out / "tasks", metrics, p.model_dump()), out / "model" / "README.md")
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics


def train_and_save(ctx: StageContext, init_dir: Path, tokenizer: Any, data: Packed, val: Packed) -> dict[str, Any]:
    """Full or LoRA fine-tuning on pretraining's loop, then the merged model, its loss curve; the metrics."""
    import torch

    from ..modeling import sft
    from ..modeling.load import folder_weights_sha256, load_model_folder, write_model_folder
    from ..modeling.train import TrainConfig, history_csv, train

    p, out = ctx.params.finetune, ctx.out
    per_step = p.batch_size * p.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
    steps = min(p.max_steps, max(1, math.ceil(math.ceil(len(data) / per_step) * p.epochs)))
    model, _ = load_model_folder(init_dir, dtype=torch.bfloat16 if p.dtype == "bfloat16" else torch.float32)
    lora = None
    if p.method == "lora":
        lora = {"r": p.lora_r, "alpha": p.lora_alpha, "dropout": p.lora_dropout, "target_modules": p.lora_target_modules}
        torch.manual_seed(p.seed)  # the adapters' initial weights
        model = sft.wrap_lora(model, **lora)
    cfg = TrainConfig(
        max_steps=steps, batch_size=p.batch_size, grad_accum=p.grad_accum, lr=p.lr, min_lr_ratio=p.min_lr_ratio,
        warmup_steps=p.warmup_steps, weight_decay=p.weight_decay, grad_clip=p.grad_clip, eval_every=steps,
        eval_blocks=len(val), checkpoint_every=p.checkpoint_every, log_every=p.log_every, seed=p.seed,
        device=p.device, precision=p.precision,
        extra_fingerprint={"init": folder_weights_sha256(init_dir), "method": p.method, "lora": lora})
    result = train(model, data, val, cfg, out / "checkpoint")
    if lora is not None:
        model = sft.merge_lora(model)
    m = result.metrics
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only the first rank writes
        write_model_folder(model, tokenizer, out / "model")
        curve = history_csv(result.history)
        write_text(curve, out / "loss.csv")
        write_text(curve, ctx.project.root / PLOT_FILE)  # for `dvc plots show` (outside the model folder, a DVC out)
        shutil.rmtree(out / "checkpoint", ignore_errors=True)
    loss = [h["loss"] for h in result.history]
    return {
        "steps": m["steps"], "resumed_from_step": result.resumed_from, "tokens": m["tokens_trained"],
        "target_tokens": m["target_tokens_trained"], "train_seconds": m["train_seconds"],
        "tokens_per_second": m["tokens_per_s"], "trainable_parameters": m["trainable_parameters"],
        "first_train_loss": loss[0] if loss else None, "final_train_loss": loss[-1] if loss else None,
        "val_loss_base": _log(m["val_perplexity_base"]), "val_loss": _log(m["val_perplexity_final"]),
        "device": m["device"], "precision": m["precision"], "world_size": m["world_size"],
    }


def _log(perplexity: float | None) -> float | None:
    """Mean token loss from a perplexity."""
    return round(math.log(perplexity), 5) if perplexity else None


def _counts(documents_in: int, documents_out: int, ledger: list[LedgerEntry]) -> dict[str, Any]:
    drops: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    for e in ledger:
        if e.action in ("dropped", "quarantined"):
            drops[e.reason] = drops.get(e.reason, 0) + 1
            examples.setdefault(e.reason, [])
            if len(examples[e.reason]) < 5:
                examples[e.reason].append(e.doc_id)
    return {
        "documents_in": documents_in,
        "documents_out": documents_out,
        "dropped": sum(1 for e in ledger if e.action == "dropped"),
        "quarantined": sum(1 for e in ledger if e.action == "quarantined"),
        "drops_by_reason": drops,
        "examples_by_reason": examples,
    }
