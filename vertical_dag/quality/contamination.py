"""Train/eval contamination, measured by the gate itself rather than read from the split stage's columns:
for each validation/test document, the share of its distinct rare n-grams that also occur in train.

N-grams are the split stage's own definition (vertical_dag.text.ngrams: word n-grams, or character n-grams
for CJK, with the split stage's settings). Rare means not
boilerplate: an n-gram found in more than split.decontaminate's max_ngram_families template families of the
split output is a standard clause shared by many forms, not leakage (vertical_dag.text.decontaminate); the
clauses of one form count however many variants of it there are. Train's hashes are one sorted array
looked up with searchsorted: 8 bytes per train n-gram.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np


def _settings(params: Any) -> dict[str, Any]:
    from ..stages.split import decontamination_settings

    return decontamination_settings(params)


def ngram_hasher(params: Any) -> Callable[[str], np.ndarray]:
    """text -> n-gram hashes, the way the split stage decontaminates."""
    from ..text.ngrams import NgramSpec

    settings = _settings(params)
    return NgramSpec(word_n=int(settings["word_ngram"]), char_n=int(settings["char_ngram"])).hashes


def _distinct(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a sort beats np.unique's hash path on uint64 here)."""
    a = np.sort(a)
    return a[np.r_[True, a[1:] != a[:-1]]] if len(a) else a


def train_index(texts: Iterable[str], hasher: Callable[[str], np.ndarray]) -> np.ndarray:
    arrays = [hasher(t) for t in texts if t]
    arrays = [a for a in arrays if len(a)]
    return _distinct(np.concatenate(arrays)) if arrays else np.empty(0, dtype=np.uint64)


def overlap(text: str, index: np.ndarray, hasher: Callable[[str], np.ndarray]) -> float:
    """Share of the text's distinct n-grams found in the train index (0.0 for a text with no n-gram)."""
    h = _distinct(hasher(text or ""))
    if not len(h) or not len(index):
        return 0.0
    pos = np.searchsorted(index, h).clip(max=len(index) - 1)
    return float((index[pos] == h).mean())


def eval_contamination(texts: list[str], splits: list[str], params: Any,
                       families: list[str] | None = None) -> list[float]:
    """Per document: for validation/test ones their overlap with train (rare n-grams), 0.0 for train ones.
    `families`: each document's template family (None: each its own)."""
    hasher = ngram_hasher(params)
    settings = _settings(params)
    common = np.empty(0, dtype=np.uint64)
    if int(settings["max_ngram_families"]) > 0:
        from ..text.decontaminate import boilerplate

        distinct = [_distinct(hasher(t or "")) for t in texts]
        groups = list(families) if families is not None else [str(i) for i in range(len(texts))]
        common = boilerplate(distinct, groups, int(settings["max_ngram_families"]))

    def rare(text: str) -> np.ndarray:
        h = hasher(text or "")
        if len(common) and len(h):
            pos = np.searchsorted(common, h).clip(max=len(common) - 1)
            h = h[common[pos] != h]
        return h

    index = train_index((t for t, s in zip(texts, splits, strict=True) if s == "train"), rare)
    return [0.0 if s == "train" else round(overlap(t, index, rare), 6) for t, s in zip(texts, splits, strict=True)]
