"""The continued-pretraining loop: AdamW, warmup + cosine, accumulation, clipping, validation, exact resume.

Data order is a pure function of (seed, step): block k of the run is permutation_{epoch}(seed)[k mod n], so a
resumed run reads exactly the blocks the uninterrupted run would have, and the learning rate is a pure
function of the step. With weights, optimizer state and RNG restored from a checkpoint, the resumed loss
trajectory matches the uninterrupted one. The same code runs under torchrun/accelerate: each rank reads its
own slice of every step's blocks and gradients are averaged by DDP.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import (
    checkpoint_fingerprint,
    clear_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .load import pick_device
from .packing import GENERAL_SOURCE, IGNORE, PAD_SOURCE, Packed

log = logging.getLogger("vertical_dag.modeling.train")

# Dense bf16 peak of common accelerators (TFLOP/s), for MFU; unknown devices report no MFU.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
               "4090": 165.0, "3090": 71.0, "V100": 125.0, "T4": 65.0}


@dataclass
class TrainConfig:
    max_steps: int = 20
    batch_size: int = 4  # blocks per micro-batch per device
    grad_accum: int = 1
    lr: float = 1e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 2  # re-warm from the base model's (unknown) final lr
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 10
    eval_blocks: int = 8  # validation perplexity on the first N validation blocks (same tokens every time)
    checkpoint_every: int = 10
    keep_checkpoints: int = 1
    log_every: int = 1
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    objective: str = "clm"  # clm | mlm
    mlm_probability: float = 0.15
    mask_token_id: int | None = None  # the tokenizer's [MASK], for mlm
    extra_fingerprint: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("eval_every", "log_every", "keep_checkpoints", "checkpoint_every", "compile", "device", "eval_blocks"):
            d.pop(k)
        return d


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    resumed_from: int | None


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.lr * min_lr_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def block_order(n_blocks: int, seed: int, start: int, count: int) -> np.ndarray:
    """Block indices start..start+count of the run's data order (a fresh seeded permutation per epoch)."""
    out = np.empty(count, dtype=np.int64)
    cache: dict[int, np.ndarray] = {}
    for i, k in enumerate(range(start, start + count)):
        epoch, offset = divmod(k, n_blocks)
        if epoch not in cache:
            cache[epoch] = np.random.default_rng([seed, epoch]).permutation(n_blocks)
        out[i] = cache[epoch][offset]
    return out


def _dist() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun / accelerate launch."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _mask_for_mlm(ids: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, mask_id: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style masking (80% [MASK], 10% random, 10% kept) with the global torch RNG (checkpointed)."""
    prob = torch.full(ids.shape, cfg.mlm_probability)
    chosen = torch.bernoulli(prob).bool() & (labels != IGNORE)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    ids = ids.clone()
    replace = torch.bernoulli(torch.full(ids.shape, 0.8)).bool() & chosen
    ids[replace] = mask_id
    rand = torch.bernoulli(torch.full(ids.shape, 0.5)).bool() & chosen & ~replace
    ids[rand] = torch.randint(vocab, ids.shape)[rand]
    return ids, labels


def _batch(data: Packed, rows: np.ndarray, device: torch.device, cfg: TrainConfig, model: Any) -> dict[str, torch.Tensor]:
    ids = torch.from_numpy(data.input_ids[rows].astype(np.int64))
    pos = torch.from_numpy(data.position_ids[rows].astype(np.int64))
    labels = torch.from_numpy(data.labels(rows))
    if cfg.objective == "mlm":
        labels = torch.where(torch.from_numpy(data.source[rows] != PAD_SOURCE), ids, torch.full_like(ids, IGNORE))
        ids, labels = _mask_for_mlm(ids, labels, cfg, cfg.mask_token_id if cfg.mask_token_id is not None else 0, model.config.vocab_size)
        attn = torch.from_numpy((data.source[rows] != PAD_SOURCE).astype(np.int64))
        return {"input_ids": ids.to(device), "attention_mask": attn.to(device), "labels": labels.to(device)}
    return {"input_ids": ids.to(device), "position_ids": pos.to(device), "labels": labels.to(device)}


def _scored(batch: dict[str, torch.Tensor], objective: str) -> int:
    lab = batch["labels"] if objective == "mlm" else batch["labels"][:, 1:]
    return int((lab != IGNORE).sum())


@torch.no_grad()
def perplexity(model: Any, data: Packed, *, max_blocks: int | None = None, batch_size: int = 4,
               device: torch.device | None = None, objective: str = "clm", precision: str = "fp32") -> float | None:
    """exp(mean token NLL) over the first `max_blocks` blocks, documents isolated as in training."""
    n = len(data) if max_blocks is None else min(len(data), max_blocks)
    if n == 0 or data.real_tokens == 0:
        return None
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    cfg = TrainConfig(objective=objective)
    nll, count = 0.0, 0
    state = torch.get_rng_state()  # MLM masking must not disturb the training RNG stream
    torch.manual_seed(0)
    for i in range(0, n, batch_size):
        rows = np.arange(i, min(n, i + batch_size))
        batch = _batch(data, rows, device, cfg, model)
        k = _scored(batch, objective)
        if k == 0:
            continue
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(**batch, use_cache=False) if objective == "clm" else model(**batch)
        nll += float(out.loss) * k
        count += k
    torch.set_rng_state(state)
    model.train(was)
    return math.exp(nll / count) if count else None


def _flops_per_token(model: Any, seq: int) -> float:
    n = sum(p.numel() for p in model.parameters())
    c = model.config
    layers, hidden = getattr(c, "num_hidden_layers", 0), getattr(c, "hidden_size", 0)
    return 6 * n + 12 * layers * hidden * seq  # PaLM appendix B (attention counted once per token)


def _peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tf * 1e12 for key, tf in PEAK_TFLOPS.items() if key in name), None)


def train(model: Any, data: Packed, val: Packed, cfg: TrainConfig, ckpt_dir: Path, *,
          extra_val: dict[str, Packed] | None = None,
          on_step: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Train `model` in place on `data` for cfg.max_steps optimizer steps, resuming from ckpt_dir if possible."""
    rank, world = _dist()
    device = pick_device(cfg.device)
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    model.to(device)
    model.train()
    torch.manual_seed(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    # the fused kernel (CPU and CUDA) is several times faster than the per-tensor loop
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=cfg.betas, fused=all(p.is_floating_point() for p in decay + no_decay))
    # compared with the JSON stored in checkpoints, hence the round trip (tuples become lists)
    fingerprint = json.loads(json.dumps({"config": cfg.fingerprint(), "data": data.fingerprint(), "val": val.fingerprint(),
                                         "world": world}))
    history: list[dict[str, Any]] = []
    start, tokens_seen, general_seen, resumed_from, train_seconds = 0, 0, 0, None, 0.0
    val_base = None
    latest = latest_checkpoint(ckpt_dir)
    if latest is not None and checkpoint_fingerprint(latest) != fingerprint:
        # made with other data, settings or base weights: resuming would silently mix two runs
        if rank == 0:
            log.warning("checkpoint %s was made with other data or settings: starting over", latest.name)
        latest = None
    if latest is not None:
        saved = load_checkpoint(latest, model, opt)
        start, history = saved["step"], saved["history"]
        tokens_seen, general_seen = saved["tokens_seen"], saved["general_tokens_seen"]
        val_base, resumed_from = saved.get("val_ppl_base"), saved["step"]
        train_seconds = saved.get("train_seconds", 0.0)
        if rank == 0:
            log.info("resuming from %s (step %d of %d, %d tokens seen)", latest.name, start, cfg.max_steps, tokens_seen)
    elif rank == 0:
        clear_checkpoints(ckpt_dir)
    if world > 1:  # no rank trains before every rank has read (or rank 0 has cleared) the checkpoint
        torch.distributed.barrier()

    eval_kw = {"max_blocks": cfg.eval_blocks, "batch_size": cfg.batch_size, "device": device,
               "objective": cfg.objective, "precision": precision}
    if val_base is None:
        val_base = perplexity(model, val, **eval_kw)
        extra_base = {k: perplexity(model, v, **eval_kw) for k, v in (extra_val or {}).items()}
    else:
        extra_base = saved.get("extra_val_base", {})
    if rank == 0:
        log.info("validation perplexity before training: %s", val_base)

    train_model = model
    if cfg.compile:
        train_model = torch.compile(model)
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(train_model, device_ids=[device.index] if device.type == "cuda" else None)

    per_step = cfg.batch_size * cfg.grad_accum * world
    flops_tok = _flops_per_token(model, data.block_size)
    peak = _peak_flops(device)
    peak = peak * world if peak else None  # tokens/s below are global: MFU against every device's peak
    for step in range(start, cfg.max_steps):
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        order = block_order(len(data), cfg.seed, step * per_step, per_step)
        micro_rows = [order[(m * world + rank) * cfg.batch_size:(m * world + rank + 1) * cfg.batch_size]
                      for m in range(cfg.grad_accum)]
        batches = [_batch(data, rows, device, cfg, model) for rows in micro_rows]
        scored = torch.tensor(sum(_scored(b, cfg.objective) for b in batches), device=device)
        if world > 1:
            torch.distributed.all_reduce(scored)
        n_items = max(1, int(scored))
        loss_sum: Any = torch.zeros((), device=device)
        for m, batch in enumerate(batches):
            sync = world == 1 or m == cfg.grad_accum - 1
            ctx = train_model.no_sync() if not sync else contextlib.nullcontext()
            with ctx, torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = train_model(**batch, use_cache=False) if cfg.objective == "clm" else train_model(**batch)
                # token-mean over the whole accumulated step (and all ranks), not a mean of micro-batch means
                loss = out.loss * _scored(batch, cfg.objective) / n_items * world
            loss.backward()
            loss_sum += loss.detach() / world
        if world > 1:  # this rank's share of the step's token-mean loss; the sum over ranks is the loss
            torch.distributed.all_reduce(loss_sum)
        loss_sum = float(loss_sum)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_tokens = sum(int((data.source[r] != PAD_SOURCE).sum()) for r in order)
        tokens_seen += step_tokens
        general_seen += sum(int((data.source[r] == GENERAL_SOURCE).sum()) for r in order)
        dt = time.perf_counter() - t0
        train_seconds += dt
        rec: dict[str, Any] = {"step": step + 1, "loss": round(loss_sum, 6), "lr": lr, "grad_norm": round(grad_norm, 4),
                               "tokens": tokens_seen, "val_ppl": None}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.max_steps:
            rec["val_ppl"] = perplexity(model, val, **eval_kw)
        history.append(rec)
        if rank == 0 and ((step + 1) % cfg.log_every == 0 or rec["val_ppl"] is not None):
            tps = step_tokens / dt
            mfu = f" mfu {flops_tok * tps / peak:.1%}" if peak else ""
            val_s = f" val_ppl {rec['val_ppl']:.3f}" if rec["val_ppl"] else ""
            log.info("step %d/%d loss %.4f lr %.2e tokens %d %.0f tok/s%s%s", step + 1, cfg.max_steps, rec["loss"], lr,
                     tokens_seen, tps, mfu, val_s)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.max_steps:
            if rank == 0:
                epoch, offset = divmod((step + 1) * per_step, len(data))
                save_checkpoint(ckpt_dir, step + 1, model, opt, {
                    "step": step + 1, "tokens_seen": tokens_seen, "general_tokens_seen": general_seen,
                    "data_position": {"epoch": epoch, "offset": offset, "blocks_read": (step + 1) * per_step},
                    "scheduler": {"kind": "warmup_cosine", "step": step + 1, "lr": lr},
                    "history": history, "fingerprint": fingerprint, "val_ppl_base": val_base,
                    "extra_val_base": extra_base, "train_seconds": train_seconds}, keep=cfg.keep_checkpoints)
            if world > 1:
                torch.distributed.barrier()
        if on_step is not None:
            on_step(step + 1, rec)
    # tokens/s over optimizer steps only (validation and checkpoint time excluded), across resumes
    tps = tokens_seen / train_seconds if train_seconds else None
    final_val = next((h["val_ppl"] for h in reversed(history) if h["val_ppl"] is not None), None)
    if final_val is None:
        final_val = perplexity(model, val, **eval_kw)
    extra_final = {k: perplexity(model, v, **eval_kw) for k, v in (extra_val or {}).items()}
    metrics = {
        "steps": cfg.max_steps,
        "tokens_trained": tokens_seen,
        "general_tokens_trained": general_seen,
        "replay_ratio_trained": round(general_seen / tokens_seen, 4) if tokens_seen else 0.0,
        "val_perplexity_base": val_base,
        "val_perplexity_final": final_val,
        "val_tokens": int(val.source[: cfg.eval_blocks].astype(bool).sum()),
        "tokens_per_s": round(tps, 2) if tps else None,
        "train_seconds": round(train_seconds, 2),
        "mfu": round(flops_tok * tps / peak, 4) if (peak and tps) else None,
        "device": str(device),
        "precision": precision,
        "world_size": world,
        "final_loss": history[-1]["loss"] if history else None,
    }
    for k in extra_val or {}:
        metrics[f"{k}_perplexity_base"] = extra_base.get(k)
        metrics[f"{k}_perplexity_final"] = extra_final.get(k)
    return TrainResult(history=history, metrics=metrics, resumed_from=resumed_from)
