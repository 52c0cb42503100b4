"""Text normalisation: Unicode form, invisible characters, leftover markup, whitespace, traditional -> simplified.

`clean_texts` is pure and idempotent: cleaning cleaned text changes nothing, so re-running a stage is safe. It
works on a whole batch at once: the character-level steps (line breaks, invisible characters, whitespace runs,
protecting full-width punctuation) are table lookups over the batch's code points (codepoints.py); markup
regexes run only on documents that hold a markup character, NFKC only on documents that are not in NFKC.

Unicode forms:
- "nfkc": plain NFKC (full-width letters/digits -> ASCII, but also full-width punctuation -> ASCII).
- "nfkc_cjk" (default): NFKC everywhere except full-width punctuation and the ideographic space in text that
  contains CJK script. Chinese typesetting uses "，。：；（）" on purpose, and folding them to ASCII makes
  Chinese text look like badly-spaced English; full-width digits and letters are still folded, which is what
  later stages (PII patterns, n-grams) need.
- "nfc" / "none": canonical composition only / untouched.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from .codepoints import SEP, CharClass, decode, doc_of, encode, per_doc_sum, shift_next, shift_prev
from .scripts import CJK_CHARS, has_cjk

UnicodeForm = Literal["nfkc_cjk", "nfkc", "nfc", "none"]

# C0/C1 controls except \t and \n (\r is folded into \n first), and format characters that render as nothing:
# zero-width space/joiners, bidi marks and embeddings, word joiner, BOM, soft hyphen, interlinear annotations,
# language tags. (ZWJ also glues emoji sequences; in training text that loss is acceptable.)
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000e0001\U000e0020-\U000e007f]"
)

# Leftover markup: comments, script/style blocks, and tags of real HTML elements (a fixed list, so "<Contract
# Law>" or "a <b" comparisons in running text are not eaten).
_MARKUP_BLOCKS = re.compile(r"<!--.*?-->|<(script|style)\b[^>]*>.*?</\1\s*>", re.S | re.I)
_HTML_TAGS = (
    "a|abbr|address|article|aside|b|big|blockquote|body|br|caption|center|cite|code|col|colgroup|dd|del|div|dl|dt|"
    "em|font|footer|form|h[1-6]|head|header|hr|html|i|iframe|img|input|ins|label|li|link|main|mark|meta|nav|ol|"
    "option|p|pre|q|s|section|select|small|span|strike|strong|sub|sup|table|tbody|td|tfoot|th|thead|title|tr|tt|"
    "u|ul|wbr|o:p|xml"
)
_TAG = re.compile(rf"</?(?:{_HTML_TAGS})(?:\s[^<>]{{0,1000}})?/?>", re.I)
_BLOCK_TAG = re.compile(r"</?(?:p|div|br|li|tr|h[1-6]|table|ul|ol|section|article|blockquote)\b[^>]*>", re.I)
# Converter leftovers: grid-table rules ("+----+----+", "|---|:--|", "-----  ----"), markdown images, and
# pandoc image references with size attributes (`!12{width="4.6in" height="3.1in"}`).
_TABLE_RULE = re.compile(r"(?m)^[ \t|+:=-]*[-=]{3,}[ \t|+:=-]*$")
_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)|!?\w*\{width=\"[^\"\n]*\"\s*height=\"[^\"\n]*\"\}")
_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")

# Full-width punctuation (FF01-FF0F, FF1A-FF20, FF3B-FF40, FF5B-FF65) and the ideographic space: NFKC folds them
# to ASCII. In CJK text we protect them by moving them to private-use code points NFKC leaves alone.
_FW_PUNCT = [c for c in range(0xFF01, 0xFF66) if not chr(c).isalnum()] + [0x3000]
_PUA_BASE = 0xF0000
_PROTECT = {c: _PUA_BASE + i for i, c in enumerate(_FW_PUNCT)}
_IS_INVISIBLE = CharClass(_INVISIBLE.pattern)
_IS_LINE_BREAK = CharClass("[\u2028\u2029\x85]")
_IS_H_SPACE = CharClass(r"[^\S\n\u3000]")  # horizontal whitespace except the ideographic space
_IS_PROTECTED = CharClass("[" + "".join(re.escape(chr(c)) for c in _FW_PUNCT) + "]")
_PROTECT_TABLE = np.arange(0x10000, dtype=np.uint32)
_PROTECT_TABLE[list(_PROTECT)] = list(_PROTECT.values())
_MARKUP_HINTS = ("<", "&", "---", "===", "{width=", "![")


@dataclass(frozen=True)
class CleanOptions:
    unicode_form: UnicodeForm = "nfkc_cjk"
    strip_markup: bool = True
    traditional_to_simplified: bool = False


def strip_markup(text: str) -> str:
    if "---" in text or "===" in text:
        text = _TABLE_RULE.sub("", text)
    if "{width=" in text or "![" in text:
        text = _IMAGE.sub("", text)
    if "<" not in text and "&" not in text:
        return text
    text = _MARKUP_BLOCKS.sub("", text)
    text = _BLOCK_TAG.sub("\n", text)
    text = _TAG.sub("", text)
    if "&" in text:
        text = _ENTITY.sub(lambda m: html.unescape(m.group()), text)
    return text


@lru_cache(maxsize=1)
def _t2s():
    import opencc  # opencc-python-reimplemented: pure Python, dictionaries ship with the package

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    return _t2s().convert(text) if has_cjk(text) else text


def _line_breaks(c: np.ndarray) -> np.ndarray:
    """"\r\n", a lone "\r", U+2028, U+2029 and U+0085 become "\n"."""
    cr = c == 13
    drop = cr & (shift_next(c, SEP) == 10)
    c = c.copy()
    c[cr | _IS_LINE_BREAK(c)] = 10
    return c[~drop]


def _whitespace(c: np.ndarray) -> np.ndarray:
    """Runs of horizontal space -> one space, runs of ideographic spaces -> one, no space at either side of a
    line break, at most one blank line. The same steps, in the same order, as the regexes they replace."""
    c = _line_breaks(c)
    h = _IS_H_SPACE(c)
    first = h & ~shift_prev(h, False)
    c[first] = 32
    c = c[~h | first]
    ideo = c == 0x3000
    c = c[~(ideo & shift_prev(ideo, False))]
    nl = c == 10
    c = c[~((c == 32) & (shift_prev(nl, False) | shift_next(nl, False)))]
    nl = c == 10
    prev = shift_prev(nl, False)
    return c[~(nl & prev & shift_prev(prev, False))]


def _unicode_form(docs: list[str], form: UnicodeForm) -> np.ndarray:
    """The documents in the Unicode form, encoded. For "nfkc_cjk", documents with CJK script have their
    full-width punctuation moved to private-use code points around NFKC, so it survives."""
    if form == "none":
        return encode(docs)
    if form in ("nfc", "nfkc"):
        name = form.upper()
        return encode([t if unicodedata.is_normalized(name, t) else unicodedata.normalize(name, t) for t in docs])
    c = encode(docs)
    cjk_doc = per_doc_sum(CJK_CHARS(c), c) > 0
    if cjk_doc.any():
        in_cjk = cjk_doc[doc_of(c)]
        used = in_cjk & (c >= _PUA_BASE) & (c < _PUA_BASE + len(_FW_PUNCT))
        if used.any():
            c, in_cjk = c[~used], in_cjk[~used]
        c = c.copy()
        protect = in_cjk & _IS_PROTECTED(c)
        c[protect] = _PROTECT_TABLE[c[protect]]
    docs = decode(c)
    c = encode([t if unicodedata.is_normalized("NFKC", t) else unicodedata.normalize("NFKC", t) for t in docs])
    if cjk_doc.any():
        back = cjk_doc[doc_of(c)] & (c >= _PUA_BASE) & (c < _PUA_BASE + len(_FW_PUNCT))
        c = c.copy()
        c[back] = np.asarray(_FW_PUNCT, dtype=np.uint32)[c[back] - _PUA_BASE]
    return c


def clean_texts(texts: list[str], opts: CleanOptions = CleanOptions()) -> list[str]:
    """Line breaks and invisible characters out, markup out, Unicode form, optional t2s, then whitespace (last,
    as the earlier steps can leave runs of spaces or blank lines behind)."""
    if not texts:
        return []
    c = encode(texts)  # a NUL inside a text arrives as \x01: invisible either way
    c = _line_breaks(c)
    docs = decode(c[~_IS_INVISIBLE(c)])
    if opts.strip_markup:
        docs = [_INVISIBLE.sub("", strip_markup(t)) if any(h in t for h in _MARKUP_HINTS) else t for t in docs]
    c = _unicode_form(docs, opts.unicode_form)
    if opts.traditional_to_simplified:
        c = encode([to_simplified(t) for t in decode(c)])
    return [t.strip(" \n\t\u3000") for t in decode(_whitespace(c))]


def clean_text(text: str, opts: CleanOptions = CleanOptions()) -> str:
    return clean_texts([text], opts)[0]
