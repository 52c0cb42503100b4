"""Train/eval contamination when the split stage does not report it: for each validation/test document, the
share of its character n-grams that also occur somewhere in train.

Character n-grams work for CJK and Western text alike. Hashes are 64-bit polynomial rolling hashes over
code points (numpy, wrap-around arithmetic); train's are kept as one sorted array and looked up with
searchsorted, so memory is 8 bytes per train character.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

NGRAM = 13
_BASE = np.uint64(1_000_003)


def ngram_hashes(text: str, n: int = NGRAM) -> np.ndarray:
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) < n:
        return np.empty(0, dtype=np.uint64)
    powers = _BASE ** np.arange(n, dtype=np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(codes, n)
    with np.errstate(over="ignore"):
        return (windows * powers).sum(axis=1, dtype=np.uint64)


def train_index(texts: Iterable[str], n: int = NGRAM) -> np.ndarray:
    arrays = [ngram_hashes(t, n) for t in texts if t]
    return np.unique(np.concatenate(arrays)) if arrays else np.empty(0, dtype=np.uint64)


def overlap(text: str, index: np.ndarray, n: int = NGRAM) -> float:
    """Share of the text's n-grams found in the train index (0.0 for a text shorter than n)."""
    h = ngram_hashes(text or "", n)
    if not len(h) or not len(index):
        return 0.0
    pos = np.searchsorted(index, h).clip(max=len(index) - 1)
    return float((index[pos] == h).mean())
