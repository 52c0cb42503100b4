"""Quality filters with named reasons, Gopher-style, CJK-aware, with per-domain presets.

Every rule returns a reason string (the ledger's `reason`) or None. Ratios, lengths and repetition are computed
for a whole batch at once: ratios by table lookups over the batch's code points, n-gram repetition with one hash
table per batch (repetition.py).

Lengths count non-space characters, not whitespace-separated words, so a Chinese document (no spaces) and an
English one are measured alike. Repeated n-grams use character n-grams for CJK text and word n-grams otherwise.

Domain presets exist because legal, medical and technical text is numbered: "第二十三条", "（一）", "1.2.3",
dosage tables. With `ignore_numbering` the clause markers are removed before ratios and repetition are
measured, and the presets relax the ratio and repetition limits, so numbered clauses are not over-dropped.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .codepoints import CharClass, encode, flags, per_doc_sum
from .ngrams import char_tokens_batch, word_tokens_batch
from .repetition import repetition_fractions
from .scripts import CJK_CHARS

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


_RE2_SPACE = CharClass("[\t\n\f\r ]")  # what `\\s` meant when these ratios were RE2 regexes
_DIGIT = CharClass("[0-9]")
_LNM = CharClass(lambda ch: unicodedata.category(ch)[0] in "LNM")
_LN = CharClass(lambda ch: unicodedata.category(ch)[0] in "LN")


@dataclass
class BatchStats:
    """Per-document statistics of a batch (numpy arrays, one entry per document)."""

    chars: np.ndarray  # non-space characters of the text
    digit_ratio: np.ndarray  # of the measured text (numbering removed when the preset says so)
    symbol_ratio: np.ndarray
    cjk: np.ndarray  # CJK share of the measured text's letters and digits reaches cjk_threshold


def batch_stats(texts: list[str], measured: list[str], t: Thresholds) -> BatchStats:
    """Lengths, ratios and script of a whole batch by table lookups over its code points (codepoints.py)."""
    raw = encode(texts)
    cps = raw if measured is texts else encode(measured)
    f = flags(cps)
    space = _RE2_SPACE.of(f)
    nonspace = np.maximum(per_doc_sum(~space, cps), 1)
    content = per_doc_sum(_LN.of(f), cps)
    return BatchStats(
        chars=per_doc_sum(~_RE2_SPACE(raw), raw),
        digit_ratio=per_doc_sum(_DIGIT.of(f), cps) / nonspace,
        symbol_ratio=per_doc_sum(~(_LNM.of(f) | space), cps) / nonspace,
        cjk=(per_doc_sum(CJK_CHARS.of(f), cps) >= t.cjk_threshold * content) & (content > 0),
    )


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


def _repetition_verdicts(texts: list[str], cjk: bool, t: Thresholds) -> list[Verdict]:
    """Repeated / top n-gram rules for texts of one kind: character n-grams for CJK text, word n-grams otherwise."""
    if cjk:
        tokens, counts = char_tokens_batch(texts)
        unit, dup_n, max_dup = "chars", t.dup_ngram_n_chars, t.max_dup_ngram_frac_chars
        top_n, max_top = t.top_ngram_n_chars, t.max_top_ngram_frac_chars
    else:
        tokens, counts = word_tokens_batch(texts)
        unit, dup_n, max_dup = "words", t.dup_ngram_n_words, t.max_dup_ngram_frac_words
        top_n, max_top = t.top_ngram_n_words, t.max_top_ngram_frac_words
    dup, _ = repetition_fractions(tokens, counts, dup_n)
    _, top = repetition_fractions(tokens, counts, top_n)
    out: list[Verdict] = []
    for i, n in enumerate(counts):
        if n < t.repetition_min_tokens:
            out.append((None, ""))
        elif dup[i] > max_dup:
            out.append(("repeated_ngrams", f"{dup[i]:.3f} of {unit} in repeated {dup_n}-grams > max_dup_ngram_frac_{unit}={max_dup}"))
        elif top[i] > max_top:
            out.append(("top_ngram", f"top {top_n}-gram covers {top[i]:.3f} of {unit} > max_top_ngram_frac_{unit}={max_top}"))
        else:
            out.append((None, ""))
    return out


def _ratio_verdict(i: int, s: BatchStats, t: Thresholds) -> Verdict | None:
    chars, digits, symbols = s.chars[i], s.digit_ratio[i], s.symbol_ratio[i]
    if chars < t.min_chars:
        return "too_short", f"{chars} non-space characters < min_chars={t.min_chars}"
    if chars > t.max_chars:
        return "too_long", f"{chars} non-space characters > max_chars={t.max_chars}"
    if digits > t.max_digit_ratio:
        return "digit_ratio", f"{digits:.3f} > max_digit_ratio={t.max_digit_ratio}"
    if symbols > t.max_symbol_ratio:
        return "symbol_ratio", f"{symbols:.3f} > max_symbol_ratio={t.max_symbol_ratio}"
    return None


def quality_verdicts(texts: list[str], t: Thresholds) -> list[Verdict]:
    """The first failed rule for each text (in REASONS order) with what was measured, or (None, "")."""
    if not texts:
        return []
    if t.ignore_numbering:
        arr = pa.array(texts, type=pa.large_string())
        measured = pc.replace_substring_regex(arr, pattern=NUMBERING_RE2, replacement=" ").to_pylist()
    else:
        measured = texts
    stats = batch_stats(texts, measured, t)
    out: list[Verdict | None] = [None] * len(texts)
    pending: dict[bool, list[int]] = {True: [], False: []}
    for i, text in enumerate(measured):
        out[i] = _ratio_verdict(i, stats, t)
        if out[i] is not None:
            continue
        dup_lines, dup_line_chars = line_repetition(text)
        if dup_lines > t.max_dup_line_frac or dup_line_chars > t.max_dup_line_char_frac:
            out[i] = ("repeated_lines", f"{dup_lines:.3f} of lines / {dup_line_chars:.3f} of characters repeat "
                                        f"> {t.max_dup_line_frac} / {t.max_dup_line_char_frac}")
        else:
            pending[bool(stats.cjk[i])].append(i)
    for cjk, idx in pending.items():
        if idx:
            for i, verdict in zip(idx, _repetition_verdicts([measured[i] for i in idx], cjk, t), strict=True):
                out[i] = verdict
    return out  # type: ignore[return-value]


def quality_reasons(texts: list[str], t: Thresholds) -> list[str | None]:
    """The first failed rule for each text, or None when it passes them all."""
    return [reason for reason, _ in quality_verdicts(texts, t)]
