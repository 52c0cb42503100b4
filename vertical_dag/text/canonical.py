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


def canonical_hash(canon: str) -> int:
    """64-bit xxh3 of an already canonical text (as an unsigned int)."""
    return xxhash.xxh3_64_intdigest(canon.encode("utf-8"))


def canonical_hashes(canon_texts: list[str]) -> np.ndarray:
    """uint64 hashes of already canonical texts (one C call per document, no per-character Python)."""
    h = xxhash.xxh3_64_intdigest
    return np.fromiter((h(t.encode("utf-8")) for t in canon_texts), dtype=np.uint64, count=len(canon_texts))


def hash_hex(h: int | np.integer) -> str:
    return f"{int(h):016x}"
