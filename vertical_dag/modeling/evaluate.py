"""Model evaluation: perplexity and bits per character, multiple choice by log-likelihood, free answers, bootstrap.

Bits per character divide the total negative log-likelihood (in bits) by the characters scored, so models
with different tokenizers compare fairly; perplexity is per token of each model's own tokenizer. A
multiple-choice item is answered by the option with the highest log-likelihood after the prompt: whole
short answers by their total (end-of-turn marker included); passages (options drawn from other documents)
by domain-conditional PMI on a common prefix: log P(option | prompt) - log P(option | a neutral prompt)
(Holtzman et al. 2021, "Surface Form Competition"), so an option wins by what the question adds, not by
being short or made of common words. The prompt is run once and its KV cache reused for every option.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..text.scripts import has_cjk
from .generate import GenerationSettings, generate_ids, postprocess
from .sft import end_of_turn, prompt_ids
from .tasks import TaskItem

LN2 = math.log(2)


@dataclass
class TextScores:
    """Per-document negative log-likelihood (nats), tokens and characters of the scored texts."""

    nll: np.ndarray
    tokens: np.ndarray
    chars: np.ndarray

    @property
    def docs(self) -> int:
        return int(self.nll.size)

    @property
    def ppl(self) -> float:
        return math.exp(self.nll.sum() / self.tokens.sum()) if self.tokens.sum() else float("nan")

    @property
    def bpc(self) -> float:
        return float(self.nll.sum() / LN2 / self.chars.sum()) if self.chars.sum() else float("nan")

    def bpc_ci(self, *, samples: int = 1000, confidence: float = 0.95, seed: int = 1234) -> list[float]:
        """Percentile bootstrap interval of bits per character over documents (the ratio of the resampled sums)."""
        return ratio_bootstrap_ci(self.nll / LN2, self.chars, samples=samples, confidence=confidence, seed=seed)


def sample_texts(texts: Sequence[str], n: int, max_chars: int, seed: int) -> list[str]:
    """A seeded sample of n non-empty texts, each cut to its first max_chars characters.

    Sampling (not the first n) makes the documents a fair draw of the corpus; cutting (not skipping) long
    ones keeps them in the sample, and every model scores exactly the same characters.
    """
    pool = [t for t in texts if t and t.strip()]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(pool), size=min(n, len(pool)), replace=False) if pool else []
    return [pool[int(i)].strip()[:max_chars] for i in sorted(picked)]


def within_budget(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> list[str]:
    """The first texts whose tokens fit max_tokens (at least one): every copy is scored on the same ones."""
    kept, used = [], 0
    for text in texts:
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if kept and used + n > max_tokens:
            break
        kept.append(text)
        used += n
    return kept


@torch.no_grad()
def score_texts(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 16,
                max_window: int = 1024) -> TextScores:
    """NLL of each text after a document separator, one forward pass per batch of similar-length texts.

    A text longer than max_window tokens is scored in windows overlapping by one token, so every token
    after the separator is predicted exactly once.
    """
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    n = len(texts)
    nll, tokens = np.zeros(n), np.zeros(n, dtype=np.int64)
    chars = np.array([len(t) for t in texts], dtype=np.int64)
    windows: list[tuple[int, list[int]]] = []
    for i, ids in enumerate(tokenizer(list(texts), add_special_tokens=False)["input_ids"] if n else []):
        seq = [sep, *ids] if sep is not None else ids
        tokens[i] = len(seq) - 1
        for s in range(0, len(seq) - 1, max_window - 1):
            windows.append((i, seq[s:s + max_window]))
    windows.sort(key=lambda w: len(w[1]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for b in range(0, len(windows), batch_size):
        group = windows[b:b + batch_size]
        width = max(len(w) for _, w in group)
        x = torch.full((len(group), width), pad)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for j, (_, w) in enumerate(group):
            x[j, :len(w)] = torch.tensor(w)
            mask[j, :len(w)] = 1
        x, mask = x.to(model.device), mask.to(model.device)
        logits = model(input_ids=x, attention_mask=mask, use_cache=False).logits[:, :-1].float()
        lp = -F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
        per = -(lp * mask[:, 1:]).sum(dim=1).cpu().numpy()
        for (doc, _), value in zip(group, per, strict=True):
            nll[doc] += float(value)
    return TextScores(nll=nll, tokens=tokens, chars=chars)


def _cache_kw(model: Any) -> str:
    """transformers renamed the forward's `past_key_values` argument to `cache`; accept both."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def option_logprobs(model: Any, tokenizer: Any, prompt: list[int], options: Sequence[str], *,
                    end: bool = True) -> list[float]:
    """Total log-likelihood of each option as the answer to `prompt`.

    end: the option is a whole answer, so the end-of-turn marker is part of it (then "刑法" cannot win by
    being the start of "刑法学"). Whole short answers are compared by this total, i.e. their probability:
    per-character means favour long labels whose later characters are near-certain once begun.
    The prompt runs once; its KV cache is repeated for all options, which run together as one batch
    (right-padded: a padded position comes after every real one, so it changes nothing they see).
    """
    dev = model.device
    out = model(input_ids=torch.tensor([prompt], device=dev), use_cache=True)
    last = out.logits[0, -1].float().log_softmax(-1)
    eot = end_of_turn(tokenizer) if end else ""
    opt_ids = [tokenizer(opt + eot, add_special_tokens=False)["input_ids"] for opt in options]
    totals = [float(last[ids[0]]) for ids in opt_ids]
    rest = [ids[:-1] for ids in opt_ids]
    width = max(len(r) for r in rest)
    if width:
        cache = getattr(out, "cache", None) or out.past_key_values
        cache.batch_repeat_interleave(len(options))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        x = torch.tensor([r + [pad] * (width - len(r)) for r in rest], device=dev)
        lp = model(input_ids=x, use_cache=True, **{_cache_kw(model): cache}).logits.float().log_softmax(-1)
        for i, ids in enumerate(opt_ids):
            n = len(ids) - 1
            if n:
                totals[i] += float(lp[i, torch.arange(n, device=dev), torch.tensor(ids[1:], device=dev)].sum())
    return totals


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 over characters for CJK text, over words otherwise."""
    def units(s: str) -> list[str]:
        s = s.strip()
        return list(s.replace(" ", "")) if has_cjk(s) else s.lower().split()

    a, b = units(pred), units(ref)
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def _norm(s: str) -> str:
    return "".join(s.split()).strip("。.!！?？,，;；:：\"'“”‘’「」").lower()


@dataclass
class ItemResult:
    task: str
    kind: str  # mc | free
    correct: float  # 1/0 (mc, exact match)
    rouge_l: float | None = None
    predicted: str = ""
    reference: str = ""


def passage_pmi(model: Any, tokenizer: Any, prompt: list[int], neutral: list[int], options: Sequence[str],
                prior_cache: dict[str, float] | None = None) -> list[float]:
    """Domain-conditional PMI of passage options: log P(option | prompt) - log P(option | neutral prompt).

    A passage's total log-likelihood mostly measures how short and how generic its wording is (every
    model then picks the same short distractor); subtracting its likelihood under a neutral prompt leaves
    what the question itself says about it. Unlike per-character or per-token means, it needs no
    assumption about how likelihood scales with length. prior_cache: the neutral scores by option text
    (distractors recur across items; the neutral prompt is the same for all of them).
    """
    cond = option_logprobs(model, tokenizer, prompt, options, end=False)
    cache = prior_cache if prior_cache is not None else {}
    todo = [o for o in dict.fromkeys(options) if o not in cache]
    if todo:
        cache.update(zip(todo, option_logprobs(model, tokenizer, neutral, todo, end=False), strict=True))
    return [c - cache[o] for c, o in zip(cond, options, strict=True)]


def score_items(model: Any, tokenizer: Any, items: Sequence[TaskItem], *, system_prompt: str | None,
                max_new_tokens: int = 32, max_free: int = 10, max_option_chars: int | None = None) -> list[ItemResult]:
    """Multiple choice by log-likelihood; free answers by greedy generation, exact match and ROUGE-L.

    With max_option_chars, every option is scored on the same-length prefix: passages of a few hundred
    tokens cost a forward pass each, and their first sentence already tells them apart. Options of the
    passage tasks (and any option list that needs cutting) are scored by passage_pmi against the same
    chat turn with an empty question, identically for every model.
    """
    results = []
    free_done = 0
    greedy = GenerationSettings(mode="greedy", max_new_tokens=max_new_tokens, repetition_penalty=1.0,
                                system_prompt=system_prompt)
    neutral = prompt_ids(tokenizer, [{"role": "user", "content": ""}], system_prompt)
    priors: dict[str, float] = {}
    for it in items:
        msgs = (it.messages[:-1] if it.messages else [{"role": "user", "content": it.prompt}])
        ids = prompt_ids(tokenizer, msgs, system_prompt)
        if it.options and it.answer_index is not None:
            whole = not max_option_chars or all(len(o) <= max_option_chars for o in it.options)
            options = it.options if whole else [o[:max_option_chars] for o in it.options]
            if it.is_passage or not whole:
                scores = passage_pmi(model, tokenizer, ids, neutral, options, priors)
            else:
                scores = option_logprobs(model, tokenizer, ids, options, end=True)
            pick = int(np.argmax(scores))
            results.append(ItemResult(it.task, "mc", float(pick == it.answer_index), None, it.options[pick], it.response))
        elif free_done < max_free:
            free_done += 1
            # an answer needs about as many tokens as the reference: do not pay for long rambles
            ref_len = len(tokenizer(it.response, add_special_tokens=False)["input_ids"])
            settings = replace(greedy, max_new_tokens=min(max_new_tokens, ref_len + 8))
            raw = tokenizer.decode(generate_ids(model, tokenizer, ids, settings), skip_special_tokens=False)
            text, _ = postprocess(raw, tokenizer, [])
            results.append(ItemResult(it.task, "free", float(_norm(text) == _norm(it.response)), rouge_l(text, it.response),
                                      text, it.response))
    return results


def ratio_bootstrap_ci(num: Sequence[float], den: Sequence[float], *, samples: int = 1000, confidence: float = 0.95,
                       seed: int = 1234) -> list[float]:
    """Percentile bootstrap interval of sum(num) / sum(den) over resampled units (e.g. bits / characters per doc)."""
    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if a.size == 0:
        return [float("nan"), float("nan")]
    idx = np.random.default_rng(seed).integers(0, a.size, size=(samples, a.size))
    ratios = a[idx].sum(axis=1) / b[idx].sum(axis=1)
    q = (1 - confidence) / 2
    return [round(float(np.quantile(ratios, q)), 4), round(float(np.quantile(ratios, 1 - q)), 4)]


def paired_ratio_difference(a: TextScores, b: TextScores, **kw: Any) -> dict[str, Any]:
    """b - a in bits per character on the same documents, with a paired bootstrap interval over documents."""
    diff_bits = b.nll / LN2 - a.nll / LN2
    return {"diff": round(b.bpc - a.bpc, 4), "ci": ratio_bootstrap_ci(diff_bits, a.chars, **kw), "n": a.docs}


def bootstrap_ci(values: Sequence[float], *, samples: int = 1000, confidence: float = 0.95, seed: int = 1234) -> list[float]:
    """Percentile bootstrap interval of the mean."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(samples, v.size))].mean(axis=1)
    a = (1 - confidence) / 2
    return [round(float(np.quantile(means, a)), 4), round(float(np.quantile(means, 1 - a)), 4)]


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], **kw: Any) -> list[float]:
    """Interval of mean(b - a) over the same items: is model b really better than model a?"""
    return bootstrap_ci([y - x for x, y in zip(a, b, strict=True)], **kw)


def paired_difference(a: Sequence[float], b: Sequence[float], tasks: Sequence[str], **kw: Any) -> dict[str, Any]:
    """Mean b - a over the same items with its paired interval, pooled and per task ("better on article
    lookup" needs its own interval, not the pooled one)."""
    def one(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
        return {"diff": round(sum(y) / len(y) - sum(x) / len(x), 4), "ci": paired_bootstrap_ci(x, y, **kw), "n": len(x)}

    out = one(a, b)
    out["tasks"] = {t: one(*[[v for v, vt in zip(m, tasks, strict=True) if vt == t] for m in (a, b)]) for t in sorted(set(tasks))}
    return out


def balanced_accuracy(references: Sequence[str], predictions: Sequence[str]) -> float:
    """Mean over the true labels of the share of their items answered right: 1/#labels for a constant answer."""
    by_label: dict[str, list[float]] = {}
    for ref, pred in zip(references, predictions, strict=True):
        by_label.setdefault(ref, []).append(float(ref == pred))
    return round(float(np.mean([np.mean(v) for v in by_label.values()])), 4)


def balanced_accuracy_ci(references: Sequence[str], predictions: Sequence[str], *, samples: int = 1000,
                         confidence: float = 0.95, seed: int = 1234) -> list[float]:
    """Percentile bootstrap interval of balanced accuracy, resampling items within each true label."""
    rng = np.random.default_rng(seed)
    hits = [np.array([float(p == r) for r, p in zip(references, predictions, strict=True) if r == label])
            for label in sorted(set(references))]
    recalls = np.stack([h[rng.integers(0, h.size, size=(samples, h.size))].mean(axis=1) for h in hits])
    means = recalls.mean(axis=0)
    q = (1 - confidence) / 2
    return [round(float(np.quantile(means, q)), 4), round(float(np.quantile(means, 1 - q)), 4)]


def summarize(results: Sequence[ItemResult], *, samples: int, confidence: float, seed: int) -> dict[str, Any]:
    """Accuracy (+ CI) over all exact-scored items and per task; ROUGE-L for free answers."""
    out: dict[str, Any] = {}
    acc = [r.correct for r in results]
    out["task_accuracy"] = round(float(np.mean(acc)), 4) if acc else None
    out["task_accuracy_ci"] = bootstrap_ci(acc, samples=samples, confidence=confidence, seed=seed) if acc else None
    out["task_items"] = len(acc)
    tasks = sorted({r.task for r in results})
    per: dict[str, Any] = {}
    for t in tasks:
        vals = [r.correct for r in results if r.task == t]
        entry = {"accuracy": round(float(np.mean(vals)), 4), "n": len(vals),
                 "ci": bootstrap_ci(vals, samples=samples, confidence=confidence, seed=seed)}
        rl = [r.rouge_l for r in results if r.task == t and r.rouge_l is not None]
        if rl:
            entry["rouge_l"] = round(float(np.mean(rl)), 4)
            entry["rouge_l_ci"] = bootstrap_ci(rl, samples=samples, confidence=confidence, seed=seed)
        mc = [r for r in results if r.task == t and r.kind == "mc"]
        if mc:  # a model that gives one answer to everything scores the majority share and knows nothing
            answer, count = Counter(r.predicted for r in mc).most_common(1)[0]
            entry["top_answer"], entry["top_answer_share"] = answer[:40], round(count / len(mc), 4)
        if len({r.reference for r in mc}) < len(mc):  # a label set: the mean recall over the true labels is its headline
            refs, preds = [r.reference for r in mc], [r.predicted for r in mc]
            entry["balanced_accuracy"] = balanced_accuracy(refs, preds)
            entry["balanced_accuracy_ci"] = balanced_accuracy_ci(refs, preds, samples=samples, confidence=confidence, seed=seed)
        per[t] = entry
        out[f"acc_{t}"] = entry["accuracy"]
    out["tasks"] = per
    return out
