"""Text normalisation: Unicode form, invisible characters, leftover markup, whitespace, traditional -> simplified.

`clean_text` is pure and idempotent: cleaning cleaned text changes nothing, so re-running a stage is safe.

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

from .scripts import has_cjk

UnicodeForm = Literal["nfkc_cjk", "nfkc", "nfc", "none"]

# C0/C1 controls except \t and \n (\r is folded into \n first), and format characters that render as nothing:
# zero-width space/joiners, bidi marks and embeddings, word joiner, BOM, soft hyphen, interlinear annotations,
# language tags. (ZWJ also glues emoji sequences; in training text that loss is acceptable.)
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000e0001\U000e0020-\U000e007f]"
)
_LINE_BREAKS = re.compile("\r\n?|[\u2028\u2029\x85]")

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
_UNPROTECT = {v: k for k, v in _PROTECT.items()}
_PUA_USED = re.compile(f"[{chr(_PUA_BASE)}-{chr(_PUA_BASE + len(_FW_PUNCT) - 1)}]")

_H_SPACE = re.compile(r"[^\S\n\u3000]+")  # horizontal whitespace except the ideographic space
_IDEO_SPACES = re.compile(r"\u3000{2,}")
_SPACE_AT_LINE_EDGES = re.compile(r"[ \t]*\n[ \t]*")
_MANY_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class CleanOptions:
    unicode_form: UnicodeForm = "nfkc_cjk"
    strip_markup: bool = True
    traditional_to_simplified: bool = False


def normalize_unicode(text: str, form: UnicodeForm = "nfkc_cjk") -> str:
    if form == "none":
        return text
    if form == "nfc":
        return unicodedata.normalize("NFC", text)
    if form == "nfkc" or not has_cjk(text):
        return unicodedata.normalize("NFKC", text)
    protected = _PUA_USED.sub("", text).translate(_PROTECT)
    return unicodedata.normalize("NFKC", protected).translate(_UNPROTECT)


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


def normalize_whitespace(text: str) -> str:
    text = _LINE_BREAKS.sub("\n", text)
    text = _H_SPACE.sub(" ", text)
    text = _IDEO_SPACES.sub("\u3000", text)
    text = _SPACE_AT_LINE_EDGES.sub("\n", text)
    text = _MANY_BLANK_LINES.sub("\n\n", text)
    return text.strip(" \n\t\u3000")


def clean_text(text: str, opts: CleanOptions = CleanOptions()) -> str:
    """Invisible characters out, markup out, Unicode form, optional t2s, then whitespace (last, as the
    earlier steps can leave runs of spaces or blank lines behind)."""
    text = _LINE_BREAKS.sub("\n", text)
    text = _INVISIBLE.sub("", text)
    if opts.strip_markup:
        text = strip_markup(text)
        text = _INVISIBLE.sub("", text)  # entities can decode to invisible characters
    text = normalize_unicode(text, opts.unicode_form)
    if opts.traditional_to_simplified:
        text = to_simplified(text)
    return normalize_whitespace(text)
