"""Script-aware shingling of a whole batch of documents at once, as uint64 hashes, in numpy.

Why script-aware: Chinese and Japanese are written without spaces, so whitespace "words" are whole
clauses and two clauses differing by one character share no shingle. Here each CJK character is a token
and each run of letters/digits in other scripts is a token. A document's token stream is cut into
segments of one kind (a CJK run, or a run of words); CJK segments give character n-grams
(`ngram_cjk`), word segments give word n-grams (`ngram_words`), or with `ngram_chars` > 0 character n-grams
of their words joined by one space (robust to OCR-like character edits, which spoil every word n-gram
containing the word), so mixed documents get both kinds. A segment
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

from .hash_spill import distinct
from .ngrams import powers
from .scripts import cjk_mask

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_BASE = np.uint64(0x100000001B3)  # odd, so invertible mod 2^64
_KIND_SALT = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD6E8FEB86659FD93))
_TABLE_SIZE = 0x30000



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


def _ngrams(tok: np.ndarray, brk: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of token n-grams inside segments (brk marks segment starts) and the positions they start at;
    a segment shorter than n gives one shingle of itself."""
    m = len(tok)
    seg = np.cumsum(brk)
    h = tok.copy()
    mult = 1
    for k in range(1, n):
        if k >= m:
            break
        mult = (mult * int(_BASE)) % (1 << 64)
        contrib = tok[k:] * np.uint64(mult)
        contrib[seg[k:] != seg[: m - k]] = 0  # past the end of the segment
        h[: m - k] += contrib
    full = np.zeros(m, dtype=bool)
    if n <= m:
        full[: m - n + 1] = seg[n - 1 :] == seg[: m - n + 1]
    first = np.flatnonzero(brk)
    seg_len = np.diff(np.append(first, m))
    short = first[seg_len < n]
    full[short] = True
    idx = np.flatnonzero(full)
    return h[idx], idx


def _tokens(cps: np.ndarray, doc_of: np.ndarray, cjk: np.ndarray, word: np.ndarray, prev: np.ndarray,
            word_hash: np.ndarray, chars: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The token stream in text order: (hash, kind 1 = CJK character / 0 = other, document, segment start).
    Tokens are every CJK character and every word (or, with `chars`, every word character, with one space
    token between consecutive words of a segment: punctuation and runs of spaces read as one space)."""
    if not chars:
        tok_pos = np.flatnonzero(cjk | (word & ~prev))
        kind = cjk[tok_pos].astype(np.int8)
        tok = np.empty(len(tok_pos), dtype=np.uint64)
        tok[kind == 1] = mix64(cps[tok_pos[kind == 1]].astype(np.uint64) ^ _KIND_SALT[1])
        tok[kind == 0] = word_hash  # word starts appear in the same order as `starts`
        space = np.zeros(len(tok_pos), bool)
    else:
        # slots in text order: 2p + 1 for the character at p, 2p for the space before a word starting at p
        # (marking slots and reading them back in order is linear, where sorting the two lists was not)
        slots = np.zeros(2 * len(cps) + 1, bool)
        slots[2 * np.flatnonzero(cjk | word) + 1] = True
        slots[2 * np.flatnonzero(word & ~prev)] = True
        keys = np.flatnonzero(slots)
        space = (keys & 1) == 0
        tok_pos = keys >> 1
        kind = np.where(space, 0, cjk[tok_pos]).astype(np.int8)
        cp = np.where(space, 32, cps[tok_pos]).astype(np.uint64)
        tok = mix64(cp ^ np.where(kind == 1, _KIND_SALT[1], _KIND_SALT[0]))  # CJK hashes as without `chars`
    tok_doc = doc_of[tok_pos]
    brk = np.ones(len(tok), dtype=bool)
    brk[1:] = (tok_doc[1:] != tok_doc[:-1]) | (kind[1:] != kind[:-1])
    if space.any():  # a space opening a segment (after a CJK run or at a document's start) separates nothing
        lead = space & brk
        brk[1:] |= lead[:-1]
        tok, kind, tok_doc, brk = tok[~lead], kind[~lead], tok_doc[~lead], brk[~lead]
    return tok, kind, tok_doc, brk


def shingle_hashes(canon_texts: list[str], ngram_cjk: int = 5, ngram_words: int = 3, ngram_chars: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of every document of a batch. `ngram_chars` > 0: space-separated scripts get character
    n-grams of that size (words joined by one space) instead of word n-grams.

    Returns (hashes uint64, offsets int64) where document i's shingles are hashes[offsets[i]:offsets[i+1]].
    A document may contain repeated hashes (a multiset); MinHash does not care, exact Jaccard uniques them.
    """
    n_docs = len(canon_texts)
    if n_docs == 0:
        return np.zeros(0, np.uint64), np.zeros(1, np.int64)
    joined = "\x00".join(t.replace("\x00", " ") for t in canon_texts)
    cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    doc_of = np.cumsum(cps == 0)  # document index per code point (separators belong to the next doc)
    cjk = cjk_mask(cps)
    table = _word_table()
    word = np.where(cps < _TABLE_SIZE, table[np.minimum(cps, _TABLE_SIZE - 1)], cps > 0) & ~cjk

    # word tokens: maximal runs of word characters, hashed as sum(cp * BASE^position in word), over the
    # word characters only (CJK text has few), so no pass over the whole batch
    prev = np.concatenate(([False], word[:-1]))
    wc = np.flatnonzero(word)
    is_start = ~prev[wc]
    run_first = np.flatnonzero(is_start)  # in word-character coordinates
    if len(wc) and not ngram_chars:
        pos_in_run = np.arange(len(wc)) - run_first[np.cumsum(is_start) - 1]
        vals = cps[wc].astype(np.uint64) * powers(_BASE, int(pos_in_run.max()) + 1)[pos_in_run]
        word_hash = mix64(np.add.reduceat(vals, run_first))
    else:
        word_hash = np.zeros(0, np.uint64)

    tok, kind, tok_doc, brk = _tokens(cps, doc_of, cjk, word, prev, word_hash, ngram_chars > 0)
    if len(tok) == 0:
        return np.zeros(0, np.uint64), np.zeros(n_docs + 1, np.int64)

    # segments hold one kind of token, so each kind's n-grams are computed on its tokens alone
    pieces_h, pieces_i = [], []
    for k, n in ((1, ngram_cjk), (0, ngram_chars or ngram_words)):
        sel = np.flatnonzero(kind == k)
        if len(sel) == 0:
            continue
        h, idx = _ngrams(tok[sel], brk[sel], n)
        pieces_h.append(mix64(h ^ _KIND_SALT[k]))
        pieces_i.append(sel[idx])
    order = np.argsort(np.concatenate(pieces_i), kind="stable")  # two sorted runs: a linear merge
    hashes = np.concatenate(pieces_h)[order]
    sh_doc = tok_doc[np.concatenate(pieces_i)[order]]
    counts = np.bincount(sh_doc, minlength=n_docs)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return hashes, offsets


def shingle_set(canon: str, ngram_cjk: int = 5, ngram_words: int = 3, ngram_chars: int = 0) -> np.ndarray:
    """The sorted unique shingle hashes of one document (for exact Jaccard)."""
    h, _ = shingle_hashes([canon], ngram_cjk, ngram_words, ngram_chars)
    return distinct(h)
