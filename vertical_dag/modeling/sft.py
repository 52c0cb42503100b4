"""Supervised fine-tuning: chat-template formatting, response-only labels, packing, full or LoRA training.

A chat is rendered with the tokenizer's own chat template (a plain "### Instruction / ### Response" layout
when it has none) and tokenized turn by turn, so the labels cover exactly the assistant turns (their text
and end-of-turn token); every prompt token is -100. Examples are packed (first fit) into blocks with position ids that
restart at each example: transformers then builds a block-diagonal causal mask (no attention across
examples). LoRA adapters are merged back into the weights at the end, so serving needs no peft.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

IGNORE = -100
FALLBACK_USER = "### Instruction:\n{content}\n\n### Response:\n"
log = logging.getLogger("vertical_dag.modeling.sft")


# ---------------------------------------------------------------- formatting and masking


def with_system(messages: list[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return list(messages)


def render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """The chat as text, by the tokenizer's template or the plain fallback layout."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    eos = tokenizer.eos_token or ""
    text = ""
    for m in messages:
        if m["role"] == "assistant":
            text += m["content"] + eos + "\n\n"
        elif m["role"] == "system":
            text += m["content"] + "\n\n"
        else:
            text += FALLBACK_USER.format(content=m["content"])
    return text  # a user block already ends with the response header, so no separate generation prompt


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]], system_prompt: str | None = None) -> list[int]:
    """Token ids of a prompt ready for the assistant's answer (what generation and MC scoring start from)."""
    text = render(tokenizer, with_system(messages, system_prompt), add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def end_of_turn(tokenizer: Any) -> str:
    """The text the template puts after an assistant answer (e.g. "<|im_end|>"), without trailing whitespace."""
    probe = "\x00probe\x00"
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": probe}]
    text = render(tokenizer, msgs, add_generation_prompt=False)
    return text[text.index(probe) + len(probe):].rstrip() if probe in text else (tokenizer.eos_token or "")


class TemplateError(ValueError):
    pass


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], system_prompt: str | None = None) -> tuple[list[int], list[int]]:
    """input_ids and labels for a chat; labels are the ids on assistant turns (+ end of turn), else -100."""
    msgs = with_system(messages, system_prompt)
    ids: list[int] = []
    labels: list[int] = []

    def add(text: str, learn: bool) -> None:
        if not text:
            return
        toks = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(toks)
        labels.extend(toks if learn else [IGNORE] * len(toks))

    done = ""
    for k, m in enumerate(msgs):
        if m["role"] == "assistant":
            head = render(tokenizer, msgs[:k], add_generation_prompt=True) if k else ""
            full = render(tokenizer, msgs[: k + 1], add_generation_prompt=False)
            if not head.startswith(done) or not full.startswith(head):
                raise TemplateError("the chat template does not render turns as prefixes of each other")
            add(head[len(done):], False)
            answer = full[len(head):]
            kept = answer.rstrip()
            add(kept, True)
            add(answer[len(kept):], False)  # whitespace after the end-of-turn token: not a target
            done = full
        else:
            full = render(tokenizer, msgs[: k + 1], add_generation_prompt=False)
            if not full.startswith(done):
                raise TemplateError("the chat template does not render turns as prefixes of each other")
            add(full[len(done):], False)
            done = full
    return ids, labels


# ---------------------------------------------------------------- packing


@dataclass
class Block:
    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]


def pack(examples: Sequence[tuple[list[int], list[int]]], block_size: int, pad_id: int, packing: bool = True) -> list[Block]:
    """First-fit packing into blocks of block_size; positions restart per example; padding is never a target.

    Examples keep their order inside a block; a block's padding continues the last example's positions, so
    it opens no new sequence. Over-long examples are skipped (callers drop and count them first).
    """
    open_blocks: list[Block] = []
    for ids, labels in examples:
        if len(ids) > block_size:
            continue
        target = None
        if packing:
            target = next((b for b in open_blocks if len(b.input_ids) + len(ids) <= block_size), None)
        if target is None:
            target = Block([], [], [])
            open_blocks.append(target)
        target.input_ids += ids
        target.labels += labels
        target.position_ids += list(range(len(ids)))
    for b in open_blocks:
        pad = block_size - len(b.input_ids)
        start = b.position_ids[-1] + 1
        b.input_ids += [pad_id] * pad
        b.labels += [IGNORE] * pad
        b.position_ids += list(range(start, start + pad))
    return open_blocks


def collate(blocks: Sequence[Block], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """A batch of blocks as tensors, on `device` (the model's) when given."""
    return {
        "input_ids": torch.tensor([b.input_ids for b in blocks], device=device),
        "labels": torch.tensor([b.labels for b in blocks], device=device),
        "position_ids": torch.tensor([b.position_ids for b in blocks], device=device),
    }


# ---------------------------------------------------------------- training


@dataclass
class TrainConfig:
    method: str = "lora"  # full | lora
    lora_r: int = 16
    lora_alpha: float = 32
    lora_dropout: float = 0.05
    lora_target_modules: Any = "all-linear"
    batch_size: int = 1
    grad_accum: int = 1
    max_steps: int = 60
    epochs: float = 1.0
    lr: float = 2e-4
    warmup_steps: int = 5
    weight_decay: float = 0.0
    checkpoint_every: int = 20
    seed: int = 1234
    fingerprint: str = ""  # a resumed run must match it (same data and settings)


@dataclass
class TrainResult:
    steps: int
    tokens: int
    target_tokens: int
    seconds: float
    final_loss: float
    val_loss: float | None
    resumed_from: int
    trainable_parameters: int
    curve: list[dict[str, float]] = field(default_factory=list)


def _lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def wrap_lora(model: Any, cfg: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, lcfg)


def _trainable(model: Any) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


@torch.no_grad()
def block_loss(model: Any, blocks: Sequence[Block], batch_size: int = 4) -> float | None:
    """Mean loss over the target tokens of `blocks` (validation)."""
    if not blocks:
        return None
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        batch = collate(blocks[i:i + batch_size], device)
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        if n == 0:
            continue
        out = model(**batch, use_cache=False)
        total += float(out.loss) * n
        count += n
    model.train(was_training)
    return total / count if count else None


def _save_state(ckpt: Path, model: Any, opt: torch.optim.Optimizer, step: int, cfg: TrainConfig, curve: list, tokens: int) -> None:
    tmp = ckpt.with_name(f".{ckpt.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    rng = {"rng": torch.get_rng_state()}
    if torch.cuda.is_available():  # dropout on a GPU draws from the CUDA generators
        rng["cuda_rng"] = torch.cuda.get_rng_state_all()
    torch.save({"trainable": trainable, "optimizer": opt.state_dict(), "step": step, "tokens": tokens, **rng},
               tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": step, "fingerprint": cfg.fingerprint, "curve": curve}))
    shutil.rmtree(ckpt, ignore_errors=True)
    tmp.rename(ckpt)


def _load_state(ckpt: Path, model: Any, opt: torch.optim.Optimizer, cfg: TrainConfig) -> tuple[int, list, int]:
    meta_file = ckpt / "meta.json"
    if not meta_file.exists():
        return 0, [], 0
    meta = json.loads(meta_file.read_text())
    if meta.get("fingerprint") != cfg.fingerprint:
        log.info("checkpoint in %s is for other data or settings: starting over", ckpt)
        return 0, [], 0
    state = torch.load(ckpt / "state.pt", weights_only=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in state["trainable"].items():
            params[n].copy_(t)
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    log.info("resuming fine-tuning from step %d", state["step"])
    return int(state["step"]), list(meta.get("curve", [])), int(state.get("tokens", 0))


def train(model: Any, blocks: list[Block], cfg: TrainConfig, *, val_blocks: Sequence[Block] = (),
          checkpoint_dir: Path | None = None, on_step: Callable[[dict[str, float]], None] | None = None) -> tuple[Any, TrainResult]:
    """Train `model` (wrapped with LoRA when cfg.method == 'lora') on packed blocks; returns a plain model.

    The returned model is standalone: LoRA adapters are merged into its weights.
    """
    torch.manual_seed(cfg.seed)
    if cfg.method == "lora":
        model = wrap_lora(model, cfg)
    model.train()
    device = next(model.parameters()).device  # batches follow the model (the caller places it: CPU or GPU)
    params = _trainable(model)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_step = cfg.batch_size * cfg.grad_accum
    epoch_steps = max(1, math.ceil(len(blocks) / per_step))
    total = min(cfg.max_steps, max(1, math.ceil(epoch_steps * cfg.epochs)))
    start, curve, tokens = (0, [], 0)
    if checkpoint_dir is not None:
        start, curve, tokens = _load_state(checkpoint_dir, model, opt, cfg)
    rng = random.Random(cfg.seed)
    order: list[int] = []
    while len(order) < total * per_step:  # the whole schedule of blocks, fixed by the seed: resuming replays it
        perm = list(range(len(blocks)))
        rng.shuffle(perm)
        order += perm
    t0 = time.perf_counter()
    target_tokens = 0
    loss_val = float("nan")
    for step in range(start, total):
        lr = _lr_at(step, cfg, total)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for a in range(cfg.grad_accum):
            idx = order[(step * cfg.grad_accum + a) * cfg.batch_size:(step * cfg.grad_accum + a + 1) * cfg.batch_size]
            batch = collate([blocks[i] for i in idx], device)
            out = model(**batch, use_cache=False)
            (out.loss / cfg.grad_accum).backward()
            step_loss += float(out.loss.detach()) / cfg.grad_accum
            tokens += int(batch["input_ids"].numel())
            target_tokens += int((batch["labels"] != IGNORE).sum())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss_val = step_loss
        row = {"step": step + 1, "loss": round(step_loss, 5), "lr": lr, "tokens": tokens,
               "seconds": round(time.perf_counter() - t0, 2)}
        curve.append(row)
        if on_step:
            on_step(row)
        if checkpoint_dir is not None and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            _save_state(checkpoint_dir, model, opt, step + 1, cfg, curve, tokens)
    val = block_loss(model, list(val_blocks))
    n_trainable = sum(p.numel() for p in params)
    if cfg.method == "lora":
        model = model.merge_and_unload()
    model.eval()
    return model, TrainResult(steps=total, tokens=tokens, target_tokens=target_tokens, seconds=time.perf_counter() - t0,
                              final_loss=loss_val, val_loss=val, resumed_from=start, trainable_parameters=n_trainable,
                              curve=curve)


def write_curve(curve: list[dict[str, float]], path: Path) -> None:
    from ..records import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "loss", "lr", "tokens", "seconds"])
        w.writeheader()
        for row in curve:
            w.writerow({k: row.get(k) for k in w.fieldnames})


def save_model(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """A standalone safetensors folder (weights + tokenizer with its chat template), swapped in atomically."""
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
