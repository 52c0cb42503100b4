"""The continued-pretraining loop: AdamW, warmup + cosine, accumulation, clipping, validation, exact resume.

Data order is a pure function of (seed, step): block k of the run is permutation_{epoch}(seed)[k mod n], so a
resumed run reads exactly the blocks the uninterrupted run would have, and the learning rate is a pure
function of the step. With weights, optimizer state and RNG restored from a checkpoint, the resumed loss
trajectory matches the uninterrupted one. The same code runs under torchrun/accelerate: each rank reads its
own slice of every step's blocks and gradients are averaged by DDP.
"""

from __future__ import annotations

import contextlib
import csv
import io
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
    extra_fingerprint: dict[str, Any] = field(default_factory=dict)  # what else a resumed run must share

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


def _batch(data: Packed, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    ids = torch.from_numpy(data.input_ids[rows].astype(np.int64))
    pos = torch.from_numpy(data.position_ids[rows].astype(np.int64))
    labels = torch.from_numpy(data.labels(rows))
    return {"input_ids": ids.to(device), "position_ids": pos.to(device), "labels": labels.to(device)}


def _scored(batch: dict[str, torch.Tensor]) -> int:
    """Tokens the causal loss scores (labels are shifted by one inside the model)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


@torch.no_grad()
def perplexity(model: Any, data: Packed, *, max_blocks: int | None = None, batch_size: int = 4,
               device: torch.device | None = None, precision: str = "fp32") -> float | None:
    """exp(mean token NLL) over the target tokens of the first `max_blocks` blocks, documents isolated as in training."""
    n = len(data) if max_blocks is None else min(len(data), max_blocks)
    if n == 0 or data.real_tokens == 0:
        return None
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    nll, count = 0.0, 0
    for i in range(0, n, batch_size):
        batch = _batch(data, np.arange(i, min(n, i + batch_size)), device)
        k = _scored(batch)
        if k == 0:
            continue
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(**batch, use_cache=False)
        nll += float(out.loss) * k
        count += k
    model.train(was)
    return math.exp(nll / count) if count else None


def history_csv(history: list[dict[str, Any]]) -> str:
    """The loss curve as CSV (step, loss, lr, tokens, val_ppl), for `dvc plots` and the eval report."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "loss", "lr", "tokens", "val_ppl"])
    for h in history:
        w.writerow([h["step"], h["loss"], f"{h['lr']:.6g}", h["tokens"], "" if h["val_ppl"] is None else round(h["val_ppl"], 4)])
    return buf.getvalue()


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


@dataclass
class _Run:
    """What a step needs besides the model: where the run stands, and what it has counted so far."""

    start: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    tokens_seen: int = 0
    general_seen: int = 0
    targets_seen: int = 0
    train_seconds: float = 0.0
    resumed_from: int | None = None
    val_base: float | None = None
    extra_base: dict[str, float | None] = field(default_factory=dict)


def _optimizer(model: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on biases and norms."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for _, p in trainable if p.dim() >= 2]
    no_decay = [p for _, p in trainable if p.dim() < 2]
    # the fused kernel (CPU and CUDA) is several times faster than the per-tensor loop
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=cfg.betas, fused=all(p.is_floating_point() for p in decay + no_decay))


def _resume(model: Any, opt: torch.optim.Optimizer, ckpt_dir: Path, fingerprint: Any, cfg: TrainConfig, rank: int) -> _Run:
    latest = latest_checkpoint(ckpt_dir)
    if latest is not None and checkpoint_fingerprint(latest) != fingerprint:
        # made with other data, settings or starting weights: resuming would silently mix two runs
        if rank == 0:
            log.warning("checkpoint %s was made with other data or settings: starting over", latest.name)
        latest = None
    if latest is None:
        if rank == 0:
            clear_checkpoints(ckpt_dir)
        return _Run()
    saved = load_checkpoint(latest, model, opt)
    run = _Run(start=saved["step"], history=saved["history"], tokens_seen=saved["tokens_seen"],
               general_seen=saved["general_tokens_seen"], targets_seen=saved.get("target_tokens_seen", 0),
               train_seconds=saved.get("train_seconds", 0.0), resumed_from=saved["step"],
               val_base=saved.get("val_ppl_base"), extra_base=saved.get("extra_val_base", {}))
    if rank == 0:
        log.info("resuming from %s (step %d of %d, %d tokens seen)", latest.name, run.start, cfg.max_steps, run.tokens_seen)
    return run


def _step(train_model: Any, model: Any, opt: torch.optim.Optimizer, data: Packed, step: int, cfg: TrainConfig,
          device: torch.device, precision: str, rank: int, world: int) -> tuple[float, float, np.ndarray, int]:
    """One optimizer step over grad_accum micro-batches; returns (loss, grad norm, blocks read, targets)."""
    per_step = cfg.batch_size * cfg.grad_accum * world
    order = block_order(len(data), cfg.seed, step * per_step, per_step)
    micro_rows = [order[(m * world + rank) * cfg.batch_size:(m * world + rank + 1) * cfg.batch_size]
                  for m in range(cfg.grad_accum)]
    batches = [_batch(data, rows, device) for rows in micro_rows]
    scored = torch.tensor(sum(_scored(b) for b in batches), device=device)
    if world > 1:
        torch.distributed.all_reduce(scored)
    n_items = max(1, int(scored))
    loss_sum: Any = torch.zeros((), device=device)
    for m, batch in enumerate(batches):
        sync = world == 1 or m == cfg.grad_accum - 1
        ctx = train_model.no_sync() if not sync else contextlib.nullcontext()
        with ctx, torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = train_model(**batch, use_cache=False)
            # token-mean over the whole accumulated step (and all ranks), not a mean of micro-batch means
            loss = out.loss * _scored(batch) / n_items * world
        loss.backward()
        loss_sum += loss.detach() / world
    if world > 1:  # this rank's share of the step's token-mean loss; the sum over ranks is the loss
        torch.distributed.all_reduce(loss_sum)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss_sum), grad_norm, order, int(scored)


def _metrics(run: _Run, cfg: TrainConfig, val: Packed, final_val: float | None, extra_final: dict[str, float | None],
             device: torch.device, precision: str, world: int, model: Any, flops_tok: float, peak: float | None) -> dict[str, Any]:
    # tokens/s over optimizer steps only (validation and checkpoint time excluded), across resumes
    tps = run.tokens_seen / run.train_seconds if run.train_seconds else None
    metrics = {
        "steps": cfg.max_steps,
        "tokens_trained": run.tokens_seen,
        "target_tokens_trained": run.targets_seen,
        "general_tokens_trained": run.general_seen,
        "replay_ratio_trained": round(run.general_seen / run.tokens_seen, 4) if run.tokens_seen else 0.0,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "val_perplexity_base": run.val_base,
        "val_perplexity_final": final_val,
        "val_tokens": int(val.source[: cfg.eval_blocks].astype(bool).sum()),
        "tokens_per_s": round(tps, 2) if tps else None,
        "train_seconds": round(run.train_seconds, 2),
        "mfu": round(flops_tok * tps / peak, 4) if (peak and tps) else None,
        "device": str(device),
        "precision": precision,
        "world_size": world,
        "final_loss": run.history[-1]["loss"] if run.history else None,
    }
    for k in extra_final:
        metrics[f"{k}_perplexity_base"] = run.extra_base.get(k)
        metrics[f"{k}_perplexity_final"] = extra_final.get(k)
    return metrics


def train(model: Any, data: Packed, val: Packed, cfg: TrainConfig, ckpt_dir: Path, *,
          extra_val: dict[str, Packed] | None = None,
          on_step: Callable[[int, dict[str, Any]], None] | None = None) -> TrainResult:
    """Train `model` in place on `data` for cfg.max_steps optimizer steps, resuming from ckpt_dir if possible.

    Only parameters with requires_grad train (a LoRA-wrapped model trains its adapters); checkpoints hold those.
    """
    rank, world = _dist()
    device = pick_device(cfg.device)
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    model.to(device)
    model.train()
    torch.manual_seed(cfg.seed)
    opt = _optimizer(model, cfg)
    # compared with the JSON stored in checkpoints, hence the round trip (tuples become lists)
    fingerprint = json.loads(json.dumps({"config": cfg.fingerprint(), "data": data.fingerprint(), "val": val.fingerprint(),
                                         "world": world}))
    run = _resume(model, opt, ckpt_dir, fingerprint, cfg, rank)
    if world > 1:  # no rank trains before every rank has read (or rank 0 has cleared) the checkpoint
        torch.distributed.barrier()
    eval_kw = {"max_blocks": cfg.eval_blocks, "batch_size": cfg.batch_size, "device": device, "precision": precision}
    if run.resumed_from is None:
        run.val_base = perplexity(model, val, **eval_kw)
        run.extra_base = {k: perplexity(model, v, **eval_kw) for k, v in (extra_val or {}).items()}
    if rank == 0:
        log.info("validation perplexity before training: %s", run.val_base)
    train_model = torch.compile(model) if cfg.compile else model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(train_model, device_ids=[device.index] if device.type == "cuda" else None)
    flops_tok = _flops_per_token(model, data.block_size)
    peak = _peak_flops(device)
    peak = peak * world if peak else None  # tokens/s below are global: MFU against every device's peak
    for step in range(run.start, cfg.max_steps):
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        loss, grad_norm, order, targets = _step(train_model, model, opt, data, step, cfg, device, precision, rank, world)
        step_tokens = sum(int((data.source[r] != PAD_SOURCE).sum()) for r in order)
        run.tokens_seen += step_tokens
        run.general_seen += sum(int((data.source[r] == GENERAL_SOURCE).sum()) for r in order)
        run.targets_seen += targets
        dt = time.perf_counter() - t0
        run.train_seconds += dt
        rec: dict[str, Any] = {"step": step + 1, "loss": round(loss, 6), "lr": lr, "grad_norm": round(grad_norm, 4),
                               "tokens": run.tokens_seen, "val_ppl": None}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.max_steps:
            rec["val_ppl"] = perplexity(model, val, **eval_kw)
        run.history.append(rec)
        if rank == 0 and ((step + 1) % cfg.log_every == 0 or rec["val_ppl"] is not None):
            tps = step_tokens / dt
            mfu = f" mfu {flops_tok * tps / peak:.1%}" if peak else ""
            val_s = f" val_ppl {rec['val_ppl']:.3f}" if rec["val_ppl"] else ""
            log.info("step %d/%d loss %.4f lr %.2e tokens %d %.0f tok/s%s%s", step + 1, cfg.max_steps, rec["loss"], lr,
                     run.tokens_seen, tps, mfu, val_s)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.max_steps:
            _checkpoint(ckpt_dir, step + 1, model, opt, run, cfg, world, lr, len(data), fingerprint, rank)
        if on_step is not None:
            on_step(step + 1, rec)
    final_val = next((h["val_ppl"] for h in reversed(run.history) if h["val_ppl"] is not None), None)
    if final_val is None:
        final_val = perplexity(model, val, **eval_kw)
    extra_final = {k: perplexity(model, v, **eval_kw) for k, v in (extra_val or {}).items()}
    metrics = _metrics(run, cfg, val, final_val, extra_final, device, precision, world, model, flops_tok, peak)
    return TrainResult(history=run.history, metrics=metrics, resumed_from=run.resumed_from)


def _checkpoint(ckpt_dir: Path, step: int, model: Any, opt: torch.optim.Optimizer, run: _Run, cfg: TrainConfig,
                world: int, lr: float, n_blocks: int, fingerprint: Any, rank: int) -> None:
    if rank == 0:
        per_step = cfg.batch_size * cfg.grad_accum * world
        epoch, offset = divmod(step * per_step, n_blocks)
        save_checkpoint(ckpt_dir, step, model, opt, {
            "step": step, "tokens_seen": run.tokens_seen, "general_tokens_seen": run.general_seen,
            "target_tokens_seen": run.targets_seen,
            "data_position": {"epoch": epoch, "offset": offset, "blocks_read": step * per_step},
            "scheduler": {"kind": "warmup_cosine", "step": step, "lr": lr},
            "history": run.history, "fingerprint": fingerprint, "val_ppl_base": run.val_base,
            "extra_val_base": run.extra_base, "train_seconds": run.train_seconds}, keep=cfg.keep_checkpoints)
    if world > 1:
        torch.distributed.barrier()
