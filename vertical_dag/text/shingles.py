"""Script-aware shingling of a whole batch of documents at once, as uint64 hashes, in numpy.

Why script-aware: Chinese and Japanese are written without spaces, so whitespace "words" are whole
clauses and two clauses differing by one character share no shingle. Here each CJK character is a token
and each run of letters/digits in other scripts is a token. A document's token stream is cut into
segments of one kind (a CJK run, or a run of words); CJK segments give character n-grams
(`ngram_cjk`), word segments give word n-grams (`ngram_words`), so mixed documents get both. A segment
shorter than its n gives one shingle of the whole segment, so short texts still have shingles.
Punctuation and spaces separate words but do not break a CJK run ("中文，中文" is one run).

Everything is vectorised over the concatenated code points of the batch: token hashes come from
polynomial prefix sums (mod 2^64), n-gram hashes from n shifted adds, so there is no Python loop per
character or per shingle.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_BASE = np.uint64(0x100000001B3)  # odd, so invertible mod 2^64
_KIND_SALT = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD6E8FEB86659FD93))
_TABLE_SIZE = 0x30000

# CJK ideographs (BMP, extensions, compatibility), kana, CJK symbols letters. Hangul is space-separated.
_CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF))


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads polynomial hashes over all 64 bits (uint64 in, uint64 out)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


@lru_cache(maxsize=1)
def _word_table() -> np.ndarray:
    """True for code points that are letters, marks or digits (built once, ~0.1 s)."""
    table = np.zeros(_TABLE_SIZE, dtype=bool)
    for cp in range(_TABLE_SIZE):
        if unicodedata.category(chr(cp))[0] in "LMN":
            table[cp] = True
    return table


def is_cjk(cps: np.ndarray) -> np.ndarray:
    mask = np.zeros(cps.shape, dtype=bool)
    for lo, hi in _CJK_RANGES:
        mask |= (cps >= lo) & (cps <= hi)
    return mask


def _powers(base: np.uint64, n: int) -> np.ndarray:
    out = np.full(n, base, dtype=np.uint64)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint64)


def _ngrams(tok: np.ndarray, seg: np.ndarray, seg_start: np.ndarray, seg_len: np.ndarray, n: int) -> tuple:
    """Hashes of token n-grams inside segments; a segment shorter than n gives one shingle of itself."""
    m = len(tok)
    h = np.zeros(m, dtype=np.uint64)
    full = np.ones(m, dtype=bool)
    mult = 1
    for k in range(n):
        shifted = np.zeros(m, dtype=np.uint64)
        same = np.zeros(m, dtype=bool)
        if k < m:
            shifted[: m - k] = tok[k:]
            same[: m - k] = seg[k:] == seg[: m - k]
        h += np.where(same, shifted * np.uint64(mult), np.uint64(0))
        full &= same
        mult = (mult * int(_BASE)) % (1 << 64)
    emit = full | ((np.arange(m) == seg_start) & (seg_len < n))
    return h, emit


def shingle_hashes(canon_texts: list[str], ngram_cjk: int = 5, ngram_words: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of every document of a batch.

    Returns (hashes uint64, offsets int64) where document i's shingles are hashes[offsets[i]:offsets[i+1]].
    A document may contain repeated hashes (a multiset); MinHash does not care, exact Jaccard uniques them.
    """
    n_docs = len(canon_texts)
    if n_docs == 0:
        return np.zeros(0, np.uint64), np.zeros(1, np.int64)
    joined = "\x00".join(t.replace("\x00", " ") for t in canon_texts)
    cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    doc_of = np.cumsum(cps == 0)  # document index per code point (separators belong to the next doc)
    cjk = is_cjk(cps)
    table = _word_table()
    word = np.where(cps < _TABLE_SIZE, table[np.minimum(cps, _TABLE_SIZE - 1)], cps > 0) & ~cjk

    # word tokens: maximal runs of word characters, hashed from prefix sums of cps * BASE^i
    prev = np.concatenate(([False], word[:-1]))
    nxt = np.concatenate((word[1:], [False]))
    starts = np.flatnonzero(word & ~prev)
    ends = np.flatnonzero(word & ~nxt) + 1
    pw = _powers(_BASE, len(cps) + 1)
    prefix = np.zeros(len(cps) + 1, dtype=np.uint64)
    np.cumsum(cps.astype(np.uint64) * pw[:-1], out=prefix[1:])
    inv = _powers(np.uint64(pow(int(_BASE), -1, 1 << 64)), len(cps) + 1)
    word_hash = mix64((prefix[ends] - prefix[starts]) * inv[starts])

    # the token stream in text order: every CJK character and every word start
    tok_pos = np.flatnonzero(cjk | (word & ~prev))
    if len(tok_pos) == 0:
        return np.zeros(0, np.uint64), np.zeros(n_docs + 1, np.int64)
    kind = cjk[tok_pos].astype(np.int8)  # 1 = CJK character, 0 = word
    tok = np.empty(len(tok_pos), dtype=np.uint64)
    tok[kind == 1] = mix64(cps[tok_pos[kind == 1]].astype(np.uint64) ^ _KIND_SALT[1])
    tok[kind == 0] = word_hash  # word starts appear in the same order as `starts`
    tok_doc = doc_of[tok_pos]
    brk = np.ones(len(tok), dtype=bool)
    brk[1:] = (tok_doc[1:] != tok_doc[:-1]) | (kind[1:] != kind[:-1])
    seg = np.cumsum(brk) - 1
    seg_first = np.flatnonzero(brk)
    seg_start = seg_first[seg]
    seg_len = np.diff(np.append(seg_first, len(tok)))[seg]

    pieces_h, pieces_i = [], []
    for k, n in ((1, ngram_cjk), (0, ngram_words)):
        h, emit = _ngrams(tok, seg, seg_start, seg_len, n)
        emit &= kind == k
        idx = np.flatnonzero(emit)
        pieces_h.append(mix64(h[idx] ^ _KIND_SALT[k]))
        pieces_i.append(idx)
    order = np.argsort(np.concatenate(pieces_i), kind="stable")
    hashes = np.concatenate(pieces_h)[order]
    sh_doc = tok_doc[np.concatenate(pieces_i)[order]]
    counts = np.bincount(sh_doc, minlength=n_docs)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return hashes, offsets


def shingle_set(canon: str, ngram_cjk: int = 5, ngram_words: int = 3) -> np.ndarray:
    """The sorted unique shingle hashes of one document (for exact Jaccard)."""
    h, _ = shingle_hashes([canon], ngram_cjk, ngram_words)
    return np.unique(h)
