"""A batch of documents as one array of code points, and character classes looked up in a table.

Text stages work on batches of thousands of short documents; calling a regex or a numpy routine per document
costs more in call overhead than in work. Here a batch becomes one uint32 array (documents end to end, each
followed by NUL; a NUL inside a text is replaced first, so NUL can only be a boundary), and a question such as
"is this a letter" becomes one table lookup for the whole batch.

A class is defined by a one-character regex (so it answers exactly what `re` answers for that class) or a
predicate; the table is filled once per code point a process meets, not for all 1.1 M code points up front.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from .hash_spill import distinct

SEP = 0  # NUL: ends every document in a batch array
_N = 0x110000


_KNOWN = np.uint32(1 << 31)
_table = np.zeros(_N, dtype=np.uint32)  # per code point: one bit per registered class, and _KNOWN
_table[SEP] = _KNOWN  # the separator belongs to no class
_tests: list[Callable[[str], bool]] = []


def flags(cps: np.ndarray) -> np.ndarray:
    """The class bits of every code point (test one with CharClass.of); one table lookup for every class."""
    f = _table[cps]
    if not (f & _KNOWN).all():
        for cp in distinct(cps[(f & _KNOWN) == 0]).tolist():
            ch = chr(cp)
            _table[cp] = _KNOWN | sum(1 << bit for bit, test in enumerate(_tests) if test(ch))
        f = _table[cps]
    return f


class CharClass:
    """A class of characters: a one-character regex (CharClass(r"\\s")) or a predicate on a character."""

    def __init__(self, pattern: str | Callable[[str], bool]):
        if isinstance(pattern, str):
            rx = re.compile(pattern)
            test: Callable[[str], bool] = lambda ch: rx.fullmatch(ch) is not None  # noqa: E731
        else:
            test = pattern
        if len(_tests) == 31:
            raise RuntimeError("codepoints: at most 31 character classes")
        self.bit = np.uint32(1 << len(_tests))
        _tests.append(test)
        known = np.flatnonzero(_table & _KNOWN)
        for cp in known[known != SEP].tolist():  # code points met before this class existed
            if test(chr(cp)):
                _table[cp] |= self.bit

    def of(self, f: np.ndarray) -> np.ndarray:
        """Membership, from the flags of an array (flags(cps))."""
        return (f & self.bit) != 0

    def __call__(self, cps: np.ndarray) -> np.ndarray:
        return self.of(flags(cps))


class CharMap:
    """A one-to-one character mapping (e.g. str.lower where it gives one character), filled the same way."""

    def __init__(self, fn: Callable[[str], str]):
        self.fn = fn
        self._to = np.arange(_N, dtype=np.uint32)
        self._known = np.zeros(_N, dtype=bool)
        self._known[SEP] = True

    def __call__(self, cps: np.ndarray) -> np.ndarray:
        new = cps[~self._known[cps]]
        if len(new):
            for cp in distinct(new).tolist():
                out = self.fn(chr(cp))
                self._to[cp] = ord(out) if len(out) == 1 else cp
            self._known[new] = True
        return self._to[cps]


def encode(texts: list[str]) -> np.ndarray:
    """The texts end to end, each followed by SEP. A NUL inside a text becomes \x01, which every class here
    treats alike (an invisible control character: no letter, digit or space), so it cannot end a document."""
    texts = [t.replace("\x00", "\x01") if "\x00" in t else t for t in texts]
    return np.frombuffer(("\x00".join(texts) + "\x00").encode("utf-32-le"), dtype=np.uint32)


def decode(cps: np.ndarray) -> list[str]:
    """Inverse of `encode`."""
    return cps.astype(np.uint32, copy=False).tobytes().decode("utf-32-le").split("\x00")[:-1]


def bounds(cps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) offsets of each document of an encoded batch; end is its separator's position."""
    ends = np.flatnonzero(cps == SEP)
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    return starts, ends


def doc_of(cps: np.ndarray) -> np.ndarray:
    """The document number of every position (a separator counts with the document it ends)."""
    is_sep = cps == SEP
    return np.cumsum(is_sep) - is_sep


def per_doc_sum(mask: np.ndarray, cps: np.ndarray) -> np.ndarray:
    """How many positions of each document the boolean mask holds (separators excluded)."""
    starts, ends = bounds(cps)
    c = np.zeros(len(cps) + 1, dtype=np.int64)
    np.cumsum(mask & (cps != SEP), out=c[1:])
    return c[ends] - c[starts]


def shift_prev(a: np.ndarray, fill) -> np.ndarray:
    """a[i - 1] at position i (fill at 0)."""
    out = np.empty_like(a)
    out[:1] = fill
    out[1:] = a[:-1]
    return out


def shift_next(a: np.ndarray, fill) -> np.ndarray:
    """a[i + 1] at position i (fill at the end)."""
    out = np.empty_like(a)
    out[-1:] = fill
    out[:-1] = a[1:]
    return out
