"""Gopher-style repetition statistics for a whole batch of documents at once.

Tokens are characters (letters and digits, for CJK text) or words (runs of letters and digits, lowercased, for
space-separated text). Every document's tokens are laid end to end in one array; every n-gram window that
lies inside one document is hashed (ngrams.rolling_hashes), keyed by its document, and counted with one sort for the
batch, which replaces one sort per document.

- dup fraction: share of a document's tokens covered by an n-gram that occurs more than once in it;
- top fraction: share of its tokens taken by its single most frequent n-gram (0 when none repeats).
Both are 0 for a document with fewer than two windows.
"""

from __future__ import annotations

import numpy as np

from .ngrams import rolling_hashes, window_starts

_DOC_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: spreads document numbers over the hash space


def _occurrences(keys: np.ndarray) -> np.ndarray:
    """How often each key occurs in the array, at each position (one sort: numpy's is vectorised, several times
    faster than a hash table here)."""
    order = np.argsort(keys)
    ordered = keys[order]
    new_run = np.empty(len(keys), dtype=bool)
    new_run[:1] = True
    new_run[1:] = ordered[1:] != ordered[:-1]
    run = np.cumsum(new_run) - 1
    freq = np.empty(len(keys), dtype=np.int64)
    freq[order] = np.bincount(run)[run]
    return freq


def repetition_fractions(tokens: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(dup fraction, top fraction) of n-grams for each document; `counts` is each document's token count."""
    docs = len(counts)
    dup, top = np.zeros(docs), np.zeros(docs)
    if not len(tokens) or n <= 0:
        return dup, top
    offsets = np.concatenate(([0], np.cumsum(counts)))
    start, windows = window_starts(counts, n)
    has = windows >= 2
    if not has.any():
        return dup, top
    doc_of_window = np.repeat(np.arange(docs), windows)
    h = rolling_hashes(tokens, n)[start]
    with np.errstate(over="ignore"):
        key = h ^ (doc_of_window.astype(np.uint64) * _DOC_MIX)
    freq = _occurrences(key)
    repeated = start[freq > 1]
    delta = np.bincount(repeated, minlength=len(tokens) + 1) - np.bincount(repeated + n, minlength=len(tokens) + 1)
    covered = np.zeros(len(tokens) + 1, dtype=np.int64)
    np.cumsum(np.cumsum(delta)[:-1] > 0, out=covered[1:])
    dup = np.where(has, (covered[offsets[1:]] - covered[offsets[:-1]]) / np.maximum(counts, 1), 0.0)
    first = np.cumsum(windows) - windows
    most = np.zeros(docs, dtype=np.int64)
    nonempty = windows > 0
    most[nonempty] = np.maximum.reduceat(freq, first[nonempty])
    top = np.where(has & (most > 1), most * n / np.maximum(counts, 1), 0.0)
    return dup, top
