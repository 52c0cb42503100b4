"""Hashed n-grams for decontamination (and, through repetition.py, repetition statistics), vectorised with numpy.

Tokens are unsigned 64-bit ids: Unicode code points for character n-grams (CJK text, where words are not
space-separated), or word hashes for word n-grams. An n-gram's hash is a polynomial rolling hash modulo 2**64,
computed for every window at once:

    C[k] = sum_{j<k} t[j] * B^-j          (B odd, so B^-1 exists modulo 2**64)
    H[i] = B^(i+n-1) * (C[i+n] - C[i])   = sum_{j=i}^{i+n-1} t[j] * B^(i+n-1-j)

numpy's uint64 arithmetic wraps, which is exactly arithmetic modulo 2**64.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .scripts import CJK_RE

BASE = np.uint64(0x100000001B3)  # FNV prime: odd
BASE_INV = np.uint64(pow(int(BASE), -1, 1 << 64))
_WORD = re.compile(r"[^\W_]+")
_NON_CONTENT = re.compile(r"[\W_]+")
_CONTENT_CHAR = re.compile(r"[^\W_]")  # what _NON_CONTENT leaves: one character token each
_MASK = (1 << 64) - 1
_CHAR_SALT = np.uint64(0x9E3779B97F4A7C15)  # keeps char and word n-gram hashes apart


_POW_CACHE: dict[int, np.ndarray] = {}


def powers(base: np.uint64, n: int) -> np.ndarray:
    """base**0 .. base**(n-1) modulo 2**64, from a cache that grows by doubling (hashing is called per document)."""
    cached = _POW_CACHE.get(int(base))
    if cached is None or len(cached) < n:
        size = max(n, 2 * len(cached) if cached is not None else 4096)
        p = np.full(size, base, dtype=np.uint64)
        p[0] = 1
        with np.errstate(over="ignore"):
            cached = _POW_CACHE[int(base)] = np.cumprod(p, dtype=np.uint64)
    return cached[:n]


def rolling_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """Hash of every length-n window of `tokens` (uint64). Empty when there are fewer than n tokens."""
    m = len(tokens)
    if m < n or n <= 0:
        return np.empty(0, dtype=np.uint64)
    t = tokens.astype(np.uint64, copy=False) + np.uint64(1)  # +1 so a zero token still counts
    with np.errstate(over="ignore"):
        c = np.zeros(m + 1, dtype=np.uint64)
        np.cumsum(t * powers(BASE_INV, m), dtype=np.uint64, out=c[1:])
        diff = c[n:] - c[:-n]
        return diff * powers(BASE, m)[n - 1:]


def char_tokens(text: str) -> np.ndarray:
    """Code points of the text's letters and digits (punctuation and spacing ignored)."""
    content = _NON_CONTENT.sub("", text)
    return np.frombuffer(content.encode("utf-32-le"), dtype=np.uint32)


def word_tokens(text: str) -> np.ndarray:
    """Word ids: Python's string hash, fine because hashes are only compared within one process.
    Words are found in the text as written and then lowercased, so they line up with `token_spans`."""
    words = _WORD.findall(text)
    return np.fromiter((hash(w.lower()) & _MASK for w in words), dtype=np.uint64, count=len(words))


def cjk_ratio(text: str) -> float:
    content = _NON_CONTENT.sub("", text)
    return (len(content) - len(CJK_RE.sub("", content))) / len(content) if content else 0.0


def is_cjk(text: str, threshold: float = 0.3) -> bool:
    return cjk_ratio(text) >= threshold


@dataclass(frozen=True)
class NgramSpec:
    """Word n-grams for space-separated text, character n-grams for CJK text."""

    word_n: int = 13
    char_n: int = 25
    cjk_threshold: float = 0.3

    def hashes(self, text: str) -> np.ndarray:
        if is_cjk(text, self.cjk_threshold):
            with np.errstate(over="ignore"):
                return rolling_hashes(char_tokens(text), self.char_n) ^ _CHAR_SALT
        return rolling_hashes(word_tokens(text), self.word_n)

    def n_for(self, text: str) -> int:
        return self.char_n if is_cjk(text, self.cjk_threshold) else self.word_n

    def token_spans(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) character offsets of the tokens `hashes` windows over, in the same order: window k
        covers the text from start[k] to end[k + n - 1]."""
        rx = _CONTENT_CHAR if is_cjk(text, self.cjk_threshold) else _WORD
        spans = np.array([m.span() for m in rx.finditer(text)], dtype=np.int64).reshape(-1, 2)
        return spans[:, 0], spans[:, 1]


class NgramIndex:
    """A set of n-gram hashes, each remembered with the first document that had it; built once, queried many."""

    def __init__(self, spec: NgramSpec):
        self.spec = spec
        self._chunks: list[np.ndarray] = []
        self._owners: list[np.ndarray] = []
        self.doc_ids: list[str] = []
        self._hashes = np.empty(0, dtype=np.uint64)
        self._owner = np.empty(0, dtype=np.int64)

    def add(self, doc_id: str, text: str) -> None:
        h = np.unique(self.spec.hashes(text))
        if len(h):
            self._chunks.append(h)
            self._owners.append(np.full(len(h), len(self.doc_ids), dtype=np.int64))
        self.doc_ids.append(doc_id)

    def freeze(self) -> NgramIndex:
        if self._chunks:
            h = np.concatenate(self._chunks)
            o = np.concatenate(self._owners)
            order = np.argsort(h, kind="stable")  # stable: the first document wins for a shared n-gram
            h, o = h[order], o[order]
            first = np.ones(len(h), dtype=bool)
            first[1:] = h[1:] != h[:-1]
            self._hashes, self._owner = h[first], o[first]
        self._chunks, self._owners = [], []
        return self

    def __len__(self) -> int:
        return len(self._hashes)

    def overlap(self, text: str) -> tuple[int, str | None]:
        """(number of the text's distinct n-grams found in the index, the doc id owning the first of them)."""
        if not len(self._hashes):
            return 0, None
        h = np.unique(self.spec.hashes(text))
        if not len(h):
            return 0, None
        pos = np.searchsorted(self._hashes, h)
        pos[pos == len(self._hashes)] = 0
        hit = self._hashes[pos] == h
        n = int(hit.sum())
        if not n:
            return 0, None
        return n, self.doc_ids[int(self._owner[pos[hit][0]])]
