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

from .codepoints import SEP, CharClass, CharMap, doc_of, encode, flags, per_doc_sum, shift_next, shift_prev
from .scripts import CJK_CHARS

BASE = np.uint64(0x100000001B3)  # FNV prime: odd
BASE_INV = np.uint64(pow(int(BASE), -1, 1 << 64))
_WORD = re.compile(r"[^\W_]+")
_CONTENT_CHAR = re.compile(r"[^\W_]")  # one character token each (what _ALNUM marks)
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


_ALNUM = CharClass(r"[^\W_]")  # re's [^\W_]: what a word or a content character is made of
_LOWER = CharMap(str.lower)
CHUNK_CHARS = 1 << 20  # code points hashed at once: bounds the power tables and temporaries (~50 MB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser. Word hashes are polynomials in the same base as the n-gram hash built on them;
    without a non-linear step, different word splits of one character run would collide."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _char_tokens(c: np.ndarray, alnum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    doc_ends = np.flatnonzero(c == SEP)
    counts = np.diff(np.concatenate(([0], np.cumsum(alnum)[doc_ends])))
    return c[alnum].astype(np.uint64), counts


def _word_tokens(c: np.ndarray, alnum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = np.flatnonzero(alnum & ~shift_prev(alnum, False))
    ends = np.flatnonzero(alnum & ~shift_next(alnum, False)) + 1
    t = _LOWER(c).astype(np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(c) + 1, dtype=np.uint64)
        np.cumsum(t * powers(BASE_INV, len(c)), dtype=np.uint64, out=prefix[1:])
        word_hash = _mix((prefix[ends] - prefix[starts]) * powers(BASE, len(c))[ends - 1])
    doc_ends = np.flatnonzero(c == SEP)
    counts = np.diff(np.concatenate(([0], np.searchsorted(starts, doc_ends))))
    return word_hash, counts


def char_tokens_batch(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(code points of every document's letters and digits end to end, token count per document)."""
    c = encode(texts)
    return _char_tokens(c, _ALNUM(c))


def word_tokens_batch(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(a 64-bit hash of every lowercased word end to end, word count per document). The hash is a function of
    the word alone, the same in every process (n-grams hashed by different workers must agree)."""
    c = encode(texts)
    return _word_tokens(c, _ALNUM(c))


def window_starts(counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(start of every length-n window lying inside one document, in a token array laid end to end; windows per
    document)."""
    windows = np.maximum(np.asarray(counts, np.int64) - n + 1, 0)
    offsets = np.cumsum(counts) - counts
    start = np.arange(int(windows.sum())) + np.repeat(offsets - (np.cumsum(windows) - windows), windows)
    return start, windows


def _cjk_ratios(f: np.ndarray, c: np.ndarray) -> np.ndarray:
    content = _ALNUM.of(f)
    n = per_doc_sum(content, c)
    cjk = per_doc_sum(content & CJK_CHARS.of(f), c)
    return np.divide(cjk, n, out=np.zeros(len(n)), where=n > 0)


def cjk_ratio(text: str) -> float:
    """Share of the text's letters and digits that are CJK."""
    c = encode([text])
    return float(_cjk_ratios(flags(c), c)[0])


def is_cjk(text: str, threshold: float = 0.3) -> bool:
    return cjk_ratio(text) >= threshold


def _chunks(texts: list[str], budget: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of documents with at most `budget` characters each (a longer document alone)."""
    ends = np.cumsum([len(t) + 1 for t in texts])
    out, lo = [], 0
    while lo < len(texts):
        base = ends[lo - 1] if lo else 0
        hi = max(int(np.searchsorted(ends, base + budget, side="right")), lo + 1)
        out.append((lo, hi))
        lo = hi
    return out


@dataclass(frozen=True)
class NgramSpec:
    """Word n-grams for space-separated text, character n-grams for CJK text."""

    word_n: int = 13
    char_n: int = 25
    cjk_threshold: float = 0.3

    def hashes(self, text: str) -> np.ndarray:
        return self.hashes_batch([text])[0]

    def hashes_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(hash of every n-gram window of every document, end to end; windows per document). Each document
        gets character or word n-grams by its own script, as `hashes` gives it."""
        out_h, out_w = [], np.zeros(len(texts), np.int64)
        for lo, hi in _chunks(texts, CHUNK_CHARS):
            h, w = self._hash_chunk(texts[lo:hi])
            out_h.append(h)
            out_w[lo:hi] = w
        return (np.concatenate(out_h) if out_h else np.empty(0, np.uint64)), out_w

    def _hash_chunk(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        c = encode(texts)
        f = flags(c)
        cjk = _cjk_ratios(f, c) >= self.cjk_threshold
        alnum = _ALNUM.of(f)
        windows = np.zeros(len(texts), np.int64)
        groups = []
        for is_char, n in ((True, self.char_n), (False, self.word_n)):
            docs = np.flatnonzero(cjk == is_char)
            if not len(docs):
                continue
            mask = np.isin(doc_of(c), docs)
            tokens, counts = (_char_tokens if is_char else _word_tokens)(c[mask], alnum[mask])
            start, w = window_starts(counts, n)
            with np.errstate(over="ignore"):
                h = rolling_hashes(tokens, n)[start] if len(start) else np.empty(0, np.uint64)
                groups.append((docs, w, h ^ _CHAR_SALT if is_char else h))
            windows[docs] = w
        offsets = np.cumsum(windows) - windows
        out = np.empty(int(windows.sum()), np.uint64)
        for docs, w, h in groups:
            where = np.arange(len(h)) + np.repeat(offsets[docs] - (np.cumsum(w) - w), w)
            out[where] = h
        return out, windows

    def n_for(self, text: str) -> int:
        return self.char_n if is_cjk(text, self.cjk_threshold) else self.word_n

    def token_spans(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) character offsets of the tokens `hashes` windows over, in the same order: window k
        covers the text from start[k] to end[k + n - 1]."""
        rx = _CONTENT_CHAR if is_cjk(text, self.cjk_threshold) else _WORD
        spans = np.array([m.span() for m in rx.finditer(text)], dtype=np.int64).reshape(-1, 2)
        return spans[:, 0], spans[:, 1]
