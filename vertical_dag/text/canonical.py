"""The canonical form two documents must share to count as exact duplicates, and its 64-bit hash.

Canonical form: Unicode NFKC (which also folds full-width Latin, digits and the ideographic space to
their ASCII forms and half-width katakana to full width), zero-width and control characters removed,
case folded, every run of whitespace collapsed to one space, ends stripped. Near-duplicate shingles are
taken from the same form, so "ＡＢＣ" and "abc" shingle alike.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import xxhash

# Zero-width characters and BOM survive NFKC but are invisible; C0/C1 controls other than whitespace too.
_INVISIBLE = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\u00ad\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"\s+")


def canonical_text(text: str) -> str:
    """The text as compared for exact duplicates (NFKC, width folded, case folded, whitespace collapsed)."""
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text)
    return _SPACES.sub(" ", text.casefold()).strip()


_SEP = "\ue000"  # private-use separator for batch processing: NFKC, casefold and the regexes leave it alone


def _fold_width(text: str) -> str:
    """Full-width ASCII (U+FF01..FF5E) and the ideographic space to ASCII, vectorised: the part of NFKC that
    changes typical CJK text; after it most such text is already NFKC and skips the slow normalisation."""
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).copy()
    wide = (cps >= 0xFF01) & (cps <= 0xFF5E)
    cps[wide] -= 0xFEE0
    cps[cps == 0x3000] = 0x20
    return cps.tobytes().decode("utf-32-le")


def _strip_collapse(text: str) -> str:
    """Invisible characters removed, whitespace runs collapsed to one space, spaces next to a separator or the
    ends removed: the regex steps of canonical_text, vectorised over a whole joined batch."""
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    small = cps < len(_WS_TABLE)
    lookup = np.minimum(cps, len(_WS_TABLE) - 1)
    cps = cps[~(small & _INVISIBLE_TABLE[lookup])]
    small = cps < len(_WS_TABLE)
    ws = small & _WS_TABLE[np.minimum(cps, len(_WS_TABLE) - 1)]
    if not ws.any():
        return cps.tobytes().decode("utf-32-le")
    boundary = cps == ord(_SEP)
    prev_ws = np.concatenate(([False], ws[:-1]))
    starts = ws & ~prev_ws  # first space of each run
    # what follows each run: the next non-space character (or the end)
    idx = np.where(ws, len(cps), np.arange(len(cps)))
    nxt = np.minimum.accumulate(idx[::-1])[::-1]
    after = np.concatenate((boundary, [True]))[nxt]
    before = np.concatenate(([True], boundary[:-1]))
    keep = ~ws | (starts & ~after & ~before)
    out = np.where(ws, np.uint32(32), cps)[keep]
    return out.tobytes().decode("utf-32-le")


def canonical_texts(texts: list[str]) -> list[str]:
    """canonical_text of every text, as a few whole-batch operations instead of several per text."""
    if not texts:
        return []
    joined = _SEP.join(texts)
    if joined.count(_SEP) != len(texts) - 1:  # a text holds the separator itself
        return [canonical_text(t) for t in texts]
    joined = _fold_width(joined)
    if not unicodedata.is_normalized("NFKC", joined):
        joined = _SEP.join(t if unicodedata.is_normalized("NFKC", t) else unicodedata.normalize("NFKC", t)
                           for t in joined.split(_SEP))
    return _strip_collapse(joined.casefold()).split(_SEP)


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Which code points the whitespace / invisible regexes match (all are in the BMP; U+FEFF is the last)."""
    bmp = "".join(chr(c) if not 0xD800 <= c < 0xE000 else " " for c in range(0x10000))
    ws, inv = np.zeros(0x10000, bool), np.zeros(0x10000, bool)
    ws[[m.start() for m in re.finditer(r"\s", bmp)]] = True
    inv[[m.start() for m in _INVISIBLE.finditer(bmp)]] = True
    ws[0xD800:0xE000] = False
    return ws, inv


_WS_TABLE, _INVISIBLE_TABLE = _tables()


def canonical_hash(canon: str) -> int:
    """64-bit xxh3 of an already canonical text (as an unsigned int)."""
    return xxhash.xxh3_64_intdigest(canon.encode("utf-8"))


def canonical_hashes(canon_texts: list[str]) -> np.ndarray:
    """uint64 hashes of already canonical texts (one C call per document, no per-character Python)."""
    h = xxhash.xxh3_64_intdigest
    return np.fromiter((h(t.encode("utf-8")) for t in canon_texts), dtype=np.uint64, count=len(canon_texts))


def hash_hex(h: int | np.integer) -> str:
    return f"{int(h):016x}"
