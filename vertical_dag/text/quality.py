"""Quality filters with named reasons, Gopher-style, CJK-aware, with per-domain presets.

Every rule returns a reason string (the ledger's `reason`) or None. Ratios and lengths are computed for a whole
batch at once with pyarrow.compute (RE2 in C++); repetition needs per-document n-gram counting (numpy).

Lengths count non-space characters, not whitespace-separated words, so a Chinese document (no spaces) and an
English one are measured alike. Repeated n-grams use character n-grams for CJK text and word n-grams otherwise.

Domain presets exist because legal, medical and technical text is numbered: "第二十三条", "（一）", "1.2.3",
dosage tables. With `ignore_numbering` the clause markers are removed before ratios and repetition are
measured, and the presets relax the ratio and repetition limits, so numbered clauses are not over-dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .ngrams import char_tokens, duplicate_fraction, is_cjk, top_ngram_fraction, word_tokens
from .scripts import CJK_CLASS

# Clause and list numbering (RE2 syntax): 第二十三条 / 第三款 / 第（四）项 / 第五章, (一) （1）, 1.2.3, "3." or "4、" at
# a line start, (a) / a) at a line start.
NUMBERING_RE2 = (
    r"第[一二三四五六七八九十百千零〇两\d]+[条款项章节编目部分]"
    r"|[（(][一二三四五六七八九十\d]{1,4}[)）]"
    r"|\d+(?:\.\d+)+\.?"
    r"|(?m:^\s*\d{1,3}[.、)])"
    r"|(?m:^\s*[（(]?[a-zA-Z][)）.])"
)


@dataclass(frozen=True)
class Thresholds:
    min_chars: int = 50  # non-space characters
    max_chars: int = 1_000_000
    max_digit_ratio: float = 0.3  # digits / non-space characters
    max_symbol_ratio: float = 0.25  # characters neither letter, digit nor space / non-space characters
    max_dup_line_frac: float = 0.3  # lines that repeat an earlier line / non-empty lines
    max_dup_line_char_frac: float = 0.2  # characters in such lines / all characters
    # Repetition: share of tokens inside an n-gram seen more than once (dup), share of tokens taken by the most
    # frequent n-gram (top). Word n-grams use Gopher's values; Chinese repeats multi-character terms far more
    # than English repeats words, so character n-grams are longer and their limits higher (measured on
    # 26k statute articles: the median dup share of 15-grams is 0, the 99th percentile 0.52).
    dup_ngram_n_words: int = 5
    max_dup_ngram_frac_words: float = 0.15
    dup_ngram_n_chars: int = 15
    max_dup_ngram_frac_chars: float = 0.6
    top_ngram_n_words: int = 2
    max_top_ngram_frac_words: float = 0.2
    top_ngram_n_chars: int = 6
    max_top_ngram_frac_chars: float = 0.35
    repetition_min_tokens: int = 30  # shorter texts skip the n-gram rules (two mentions of a name is not spam)
    ignore_numbering: bool = False  # strip clause numbering before measuring ratios and repetition
    cjk_threshold: float = 0.3  # share of CJK letters that makes a document "CJK" (character n-grams)


PRESETS: dict[str, dict[str, Any]] = {
    "general": {},
    "legal": dict(min_chars=8, max_digit_ratio=0.5, max_symbol_ratio=0.4, max_dup_line_frac=0.5,
                  max_dup_line_char_frac=0.4, max_dup_ngram_frac_words=0.3, max_dup_ngram_frac_chars=0.85,
                  max_top_ngram_frac_words=0.3, max_top_ngram_frac_chars=0.5, ignore_numbering=True),
    "medical": dict(min_chars=20, max_digit_ratio=0.45, max_symbol_ratio=0.4, max_dup_line_frac=0.4,
                    max_dup_line_char_frac=0.3, max_dup_ngram_frac_words=0.25, max_dup_ngram_frac_chars=0.75,
                    max_top_ngram_frac_words=0.3, max_top_ngram_frac_chars=0.45, ignore_numbering=True),
    "finance": dict(min_chars=20, max_digit_ratio=0.5, max_symbol_ratio=0.35, max_dup_ngram_frac_words=0.25,
                    max_dup_ngram_frac_chars=0.75, ignore_numbering=True),
    "technical": dict(min_chars=20, max_digit_ratio=0.4, max_symbol_ratio=0.45, max_dup_line_frac=0.4,
                      max_dup_ngram_frac_words=0.3, max_top_ngram_frac_words=0.3, ignore_numbering=True),
}

REASONS = ("too_short", "too_long", "digit_ratio", "symbol_ratio", "repeated_lines", "repeated_ngrams", "top_ngram")


def resolve_thresholds(preset: str, overrides: dict[str, Any] | None = None) -> Thresholds:
    """Preset values, then every override that is not None (params win over the preset)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown quality preset {preset!r}; presets: {', '.join(PRESETS)}")
    t = replace(Thresholds(), **PRESETS[preset])
    known = {f.name for f in fields(Thresholds)}
    return replace(t, **{k: v for k, v in (overrides or {}).items() if v is not None and k in known})


def batch_ratios(texts: pa.Array, t: Thresholds) -> dict[str, np.ndarray]:
    """Per-document length and ratio statistics for a whole batch, in C++ (pyarrow.compute)."""
    texts = pc.cast(texts, pa.large_string())
    measured = pc.replace_substring_regex(texts, pattern=NUMBERING_RE2, replacement=" ") if t.ignore_numbering else texts
    nonspace = pc.utf8_length(pc.replace_substring_regex(texts, pattern=r"\s+", replacement="")).to_numpy(zero_copy_only=False)
    measured_nonspace = pc.utf8_length(pc.replace_substring_regex(measured, pattern=r"\s+", replacement=""))
    measured_nonspace = np.maximum(measured_nonspace.to_numpy(zero_copy_only=False), 1)
    digits = pc.count_substring_regex(measured, pattern=r"\d").to_numpy(zero_copy_only=False)
    symbols = pc.count_substring_regex(measured, pattern=r"[^\p{L}\p{N}\p{M}\s]").to_numpy(zero_copy_only=False)
    return {
        "chars": nonspace.astype(np.int64),
        "digit_ratio": digits / measured_nonspace,
        "symbol_ratio": symbols / measured_nonspace,
    }


def line_repetition(text: str) -> tuple[float, float]:
    """(share of non-empty lines that repeat an earlier line, share of characters in those lines)."""
    lines = [ln.strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    if len(lines) < 2:
        return 0.0, 0.0
    seen: set[str] = set()
    dup_lines = dup_chars = total = 0
    for ln in lines:
        total += len(ln)
        if ln in seen:
            dup_lines += 1
            dup_chars += len(ln)
        seen.add(ln)
    return dup_lines / len(lines), dup_chars / max(total, 1)


Verdict = tuple[str | None, str]  # (reason or None, "measured value vs limit" for the ledger)


def ngram_repetition(text: str, t: Thresholds, cjk: bool | None = None) -> Verdict:
    """Repeated / top n-gram rules: character n-grams for CJK text, word n-grams otherwise."""
    if cjk if cjk is not None else is_cjk(text, t.cjk_threshold):
        tokens, unit = char_tokens(text), "chars"
        dup_n, max_dup, top_n, max_top = t.dup_ngram_n_chars, t.max_dup_ngram_frac_chars, t.top_ngram_n_chars, t.max_top_ngram_frac_chars
    else:
        tokens, unit = word_tokens(text), "words"
        dup_n, max_dup, top_n, max_top = t.dup_ngram_n_words, t.max_dup_ngram_frac_words, t.top_ngram_n_words, t.max_top_ngram_frac_words
    if len(tokens) < t.repetition_min_tokens:
        return None, ""
    dup = duplicate_fraction(tokens, dup_n)
    if dup > max_dup:
        return "repeated_ngrams", f"{dup:.3f} of {unit} in repeated {dup_n}-grams > max_dup_ngram_frac_{unit}={max_dup}"
    top = top_ngram_fraction(tokens, top_n)
    if top > max_top:
        return "top_ngram", f"top {top_n}-gram covers {top:.3f} of {unit} > max_top_ngram_frac_{unit}={max_top}"
    return None, ""


def quality_verdicts(texts: list[str], t: Thresholds) -> list[Verdict]:
    """The first failed rule for each text (in REASONS order) with what was measured, or (None, "")."""
    if not texts:
        return []
    arr = pa.array(texts, type=pa.large_string())
    stats = batch_ratios(arr, t)
    if t.ignore_numbering:
        measured = pc.replace_substring_regex(arr, pattern=NUMBERING_RE2, replacement=" ").to_pylist()
    else:
        measured = texts
    # CJK share of letters and digits, for the whole batch in C++ (decides character vs word n-grams)
    m_arr = pa.array(measured, type=pa.large_string())
    content = pc.utf8_length(pc.replace_substring_regex(m_arr, pattern=r"[^\p{L}\p{N}]+", replacement=""))
    cjk_chars = pc.count_substring_regex(m_arr, pattern=f"[{CJK_CLASS}]")
    cjk = (cjk_chars.to_numpy(zero_copy_only=False) >= t.cjk_threshold * content.to_numpy(zero_copy_only=False)) & (
        content.to_numpy(zero_copy_only=False) > 0)
    out: list[Verdict] = []
    for i, text in enumerate(measured):
        chars, digits, symbols = stats["chars"][i], stats["digit_ratio"][i], stats["symbol_ratio"][i]
        if chars < t.min_chars:
            out.append(("too_short", f"{chars} non-space characters < min_chars={t.min_chars}"))
        elif chars > t.max_chars:
            out.append(("too_long", f"{chars} non-space characters > max_chars={t.max_chars}"))
        elif digits > t.max_digit_ratio:
            out.append(("digit_ratio", f"{digits:.3f} > max_digit_ratio={t.max_digit_ratio}"))
        elif symbols > t.max_symbol_ratio:
            out.append(("symbol_ratio", f"{symbols:.3f} > max_symbol_ratio={t.max_symbol_ratio}"))
        else:
            dup_lines, dup_line_chars = line_repetition(text)
            if dup_lines > t.max_dup_line_frac or dup_line_chars > t.max_dup_line_char_frac:
                out.append(("repeated_lines", f"{dup_lines:.3f} of lines / {dup_line_chars:.3f} of characters repeat "
                                              f"> {t.max_dup_line_frac} / {t.max_dup_line_char_frac}"))
            else:
                out.append(ngram_repetition(text, t, bool(cjk[i])))
    return out


def quality_reasons(texts: list[str], t: Thresholds) -> list[str | None]:
    """The first failed rule for each text, or None when it passes them all."""
    return [reason for reason, _ in quality_verdicts(texts, t)]

