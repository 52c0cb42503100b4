"""Which characters are CJK: the one definition every text algorithm uses.

CJK here means the scripts written without spaces between words: Han ideographs (with the extensions and
compatibility blocks) and Japanese kana. Korean Hangul is written with spaces between words, so it is *not*
CJK for tokenising: it gets word shingles and word n-grams like Latin text.
"""

from __future__ import annotations

import re

import numpy as np

from .codepoints import CharClass

# kana, CJK extension A, unified ideographs, compatibility ideographs, the supplementary ideograph planes
CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF))
# CJK punctuation and full-width forms: they sit between CJK characters without spaces around them
CJK_PUNCT_RANGES = ((0x3000, 0x303F), (0xFF00, 0xFFEF))


def char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    """The ranges as the inside of a regex character class (literal characters: Python re and RE2 alike)."""
    return "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in ranges)


CJK_CLASS = char_class(CJK_RANGES)
CJK_RE = re.compile(f"[{CJK_CLASS}]")
CJK_CHARS = CharClass(f"[{CJK_CLASS}]")  # the same class, for arrays of code points (codepoints.py)


def has_cjk(text: str) -> bool:
    return CJK_RE.search(text) is not None


def cjk_mask(cps: np.ndarray) -> np.ndarray:
    """True for the code points (an integer array) that are CJK."""
    mask = np.zeros(cps.shape, dtype=bool)
    for lo, hi in CJK_RANGES:
        mask |= (cps >= lo) & (cps <= hi)
    return mask
