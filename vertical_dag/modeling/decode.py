"""Token-by-token decoding of a batch of prompts, each with its own settings, with a KV cache.

One loop serves `vertical-dag generate` (a batch of one), the server (micro-batches of queued requests)
and streaming (a callback per new token). Prompts are left-padded; the attention mask hides the padding
and position ids count only real tokens, so a row's answer does not depend on what it is batched with
(up to floating-point rounding of the batched matmuls). A row ends at an end-of-turn/EOS token, a stop
string, max_new_tokens, or when its callback returns False (a client that went away); rows that end
are dropped from the cache, so a cancelled request stops costing compute at once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

OnToken = Callable[[list[int]], bool]  # the row's new ids so far -> keep going?


@dataclass
class Row:
    ids: list[int]  # prompt token ids
    settings: Any  # GenerationSettings
    on_token: OnToken | None = None
    new: list[int] = field(default_factory=list)
    finish: str | None = None  # end_of_turn | stop_string | length | cancelled


def _forward_args(model: Any) -> tuple[str, dict[str, Any]]:
    """transformers 5 renamed `past_key_values` to `cache` (argument and output); and only the last
    position's logits are needed, which spares the output head most of the prompt."""
    params = inspect.signature(model.forward).parameters
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    return ("cache" if "cache" in params else "past_key_values"), extra


def _penalize(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """The CTRL repetition penalty (what transformers' generate applies): seen tokens' logits scaled down."""
    if penalty == 1.0:
        return logits
    picked = logits.gather(0, seen)
    logits = logits.clone()
    logits.scatter_(0, seen, torch.where(picked < 0, picked * penalty, picked / penalty))
    return logits


def _next_token(logits: torch.Tensor, row: Row, gen: torch.Generator | None) -> int:
    s = row.settings
    seen = torch.tensor(row.ids + row.new, dtype=torch.long, device=logits.device)
    logits = _penalize(logits.float(), seen, s.repetition_penalty)
    if gen is None:
        return int(logits.argmax())
    probs = torch.softmax(logits / s.temperature, dim=-1)
    if s.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < s.top_p  # smallest set reaching top_p (always the first)
        probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs.cpu(), 1, generator=gen))


def _ended(row: Row, token: int, stop_ids: set[int], tokenizer: Any) -> str | None:
    if token in stop_ids:
        return "end_of_turn"
    stops = [x for x in row.settings.stop if x]
    if stops:
        # a character can take up to 4 byte-level tokens: look back far enough for the longest stop string
        tail = tokenizer.decode(row.new[-(4 * max(len(x) for x in stops) + 4):], skip_special_tokens=False)
        if any(x in tail for x in stops):
            return "stop_string"
    if len(row.new) >= row.settings.max_new_tokens:
        return "length"
    return None


@torch.no_grad()
def decode(model: Any, tokenizer: Any, rows: Sequence[Row], stop_ids: Sequence[int]) -> None:
    """Fill each row's `new` ids and `finish` reason. Rows may differ in prompt, length and settings."""
    if not rows:
        return
    device = model.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    width = max(len(r.ids) for r in rows)
    x = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, width - len(r.ids):] = torch.tensor(r.ids)
        mask[i, width - len(r.ids):] = 1
    x, mask = x.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    gens = []
    for r in rows:
        g = None
        if r.settings.mode == "sample":
            g = torch.Generator().manual_seed(int(r.settings.seed))
        gens.append(g)
    stops = set(stop_ids)
    cache_kw, extra = _forward_args(model)
    live = list(range(len(rows)))  # indices into rows of the rows still decoding, in cache order
    out = model(input_ids=x, attention_mask=mask, position_ids=pos, use_cache=True, **extra)
    cache, logits, last_pos = getattr(out, cache_kw), out.logits[:, -1], pos[:, -1]
    while live:
        step_tokens, keep = [], []
        for j, i in enumerate(live):
            r = rows[i]
            token = _next_token(logits[j], r, gens[i])
            r.new.append(token)
            r.finish = _ended(r, token, stops, tokenizer)
            if r.finish is None and r.on_token is not None and not r.on_token(r.new):
                r.finish = "cancelled"
            elif r.finish is not None and r.on_token is not None:
                r.on_token(r.new)
            if r.finish is None:
                keep.append(j)
                step_tokens.append(token)
        if not keep:
            break
        if len(keep) < len(live):
            cache.batch_select_indices(torch.tensor(keep, device=device))
            mask, last_pos = mask[keep], last_pos[keep]
            live = [live[j] for j in keep]
        mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
        last_pos = last_pos + 1
        step = torch.tensor(step_tokens, device=device)[:, None]
        out = model(input_ids=step, attention_mask=mask, position_ids=last_pos[:, None], use_cache=True,
                    **{cache_kw: cache}, **extra)
        cache, logits = getattr(out, cache_kw), out.logits[:, -1]
