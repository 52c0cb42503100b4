"""finetune: supervised fine-tuning on the user's instruction files and tasks generated from the corpus.

Reads data/splits/{train,validation,test}.parquet and the pretrained (or base) model; writes
data/models/finetuned/{model/ (standalone safetensors), loss.csv, tasks/{train,validation,eval}.jsonl,
ledger/, state.json}. Items from validation/test documents never reach training: test items become the
held-out eval set the evaluate stage scores. A malformed user record is quarantined with file:line and
the reason. An unchanged run (same data, params and starting model) is skipped; a crashed one resumes.
"""

from __future__ import annotations

import glob
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..modeling import tasks as T
from ..modeling.task_files import read_task_file
from ..plugins import load_registry
from ..records import LedgerEntry, ledger_table, read_json, write_json, write_parquet
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


def _fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, ensure_ascii=False, default=str).encode())
    return h.hexdigest()[:16]


def _model_stamp(folder: Path) -> list:
    return sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.iterdir() if p.is_file())


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
    import torch

    from ..modeling import sft
    from ..modeling.load import load_model_folder, pick_device

    p = ctx.params.finetune
    root, out = ctx.project.root, ctx.out
    started = time.perf_counter()
    torch.manual_seed(p.seed)
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
    blocks = sft.pack(examples, p.block_size, pad, p.packing)
    val_blocks = sft.pack(val_examples, p.block_size, pad, p.packing)

    (out / "tasks").mkdir(parents=True, exist_ok=True)
    T.write_items(kept, out / "tasks/train.jsonl")
    T.write_items(val_items, out / "tasks/validation.jsonl")
    T.write_items(eval_items, out / "tasks/eval.jsonl")
    write_parquet(ledger_table(ledger), out / "ledger/finetune.parquet")

    code = [hashlib.sha256(Path(mod.__file__).read_bytes()).hexdigest() for mod in (sft, T)]
    fp = _fingerprint(code, p.model_dump(), [it.to_json() for it in kept], _model_stamp(init_dir))
    state = read_json(out / "state.json", {})
    model_dir = out / "model"
    # in = every user record (good or malformed) + the generated items the mix chose
    counts = _counts(len(user_items) + malformed + len(train_items) - len(chosen_user), len(kept), ledger)
    if state.get("fingerprint") == fp and (model_dir / "config.json").exists() and state.get("metrics"):
        ctx.log.info("fine-tuned model is up to date (same data, params and starting model): nothing to train")
        return {**state["metrics"], **counts, "skipped": True, "seconds": round(time.perf_counter() - started, 2)}

    # 3. train (resuming from out/checkpoint when the same run crashed before)
    ctx.log.info("fine-tuning %s (%s) on %d examples in %d blocks of %d tokens; %d held-out eval items",
                 ctx.project.rel(init_dir), p.method, len(kept), len(blocks), p.block_size, len(eval_items))
    dtype = torch.bfloat16 if p.dtype == "bfloat16" else torch.float32
    model, _ = load_model_folder(init_dir, objective="clm", dtype=dtype)
    model.to(pick_device(p.device))
    cfg = sft.TrainConfig(method=p.method, lora_r=p.lora_r, lora_alpha=p.lora_alpha, lora_dropout=p.lora_dropout,
                          lora_target_modules=p.lora_target_modules, batch_size=p.batch_size, grad_accum=p.grad_accum,
                          max_steps=p.max_steps, epochs=p.epochs, lr=p.lr, warmup_steps=p.warmup_steps,
                          weight_decay=p.weight_decay, checkpoint_every=p.checkpoint_every, seed=p.seed, fingerprint=fp)

    def progress(row: dict[str, float]) -> None:
        if row["step"] == 1 or row["step"] % 10 == 0:
            ctx.log.info("step %d loss %.4f lr %.2e (%.0f tokens/s)", row["step"], row["loss"], row["lr"],
                         row["tokens"] / max(row["seconds"], 1e-6))

    if not blocks:
        raise ValueError("no training examples fit in block_size; raise finetune.block_size or check the task weights")
    model, res = sft.train(model, blocks, cfg, val_blocks=val_blocks, checkpoint_dir=out / "checkpoint", on_step=progress)
    sft.save_model(model, tokenizer, model_dir)
    sft.write_curve(res.curve, out / "loss.csv")
    sft.write_curve(res.curve, root / PLOT_FILE)  # for `dvc plots show` (outside the model folder, a DVC out)
    import shutil

    shutil.rmtree(out / "checkpoint", ignore_errors=True)
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
        "steps": res.steps,
        "resumed_from_step": res.resumed_from,
        "tokens": res.tokens,
        "target_tokens": res.target_tokens,
        "train_seconds": round(res.seconds, 2),
        "tokens_per_second": round(res.tokens / max(res.seconds, 1e-6), 1),
        "trainable_parameters": res.trainable_parameters,
        "final_train_loss": round(res.final_loss, 5),
        "first_train_loss": res.curve[0]["loss"] if res.curve else None,
        "val_loss": round(res.val_loss, 5) if res.val_loss is not None else None,
    }
    write_json({"fingerprint": fp, "metrics": metrics}, out / "state.json")
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics


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
