"""Documents' way through normalisation, a batch at a time: clean -> redact PII -> quality filters -> language.

Each step can end a document with a reason (the ledger's `reason`):
  empty_after_cleaning, all_pii, too_short, too_long, digit_ratio, symbol_ratio, repeated_lines,
  repeated_ngrams, top_ngram, lang_undetermined, lang_not_allowed.
Quality rules look at the redacted text with its placeholders removed: the text the model will see, without
letting `<PHONE>` tags count as letters or symbols.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .clean import CleanOptions, clean_texts
from .langid import UNDETERMINED, detect_languages
from .pii import Redactor, strip_placeholders
from .quality import Thresholds, quality_verdicts


@dataclass(frozen=True)
class NormalizerConfig:
    clean: CleanOptions = CleanOptions()
    thresholds: Thresholds = Thresholds()
    pii_enabled: bool = True
    pii_types: tuple[str, ...] = ("EMAIL", "ID_CARD", "BANK_CARD", "IP", "PHONE")
    extra_patterns: dict[str, str] = field(default_factory=dict)
    max_pii_char_frac: float = 0.8
    allowed_languages: tuple[str, ...] = ()
    min_lang_score: float = 0.4
    drop_undetermined_language: bool = True


@dataclass
class DocResult:
    text: str | None  # None: dropped
    reason: str | None = None
    detail: str = ""
    lang: str | None = None
    redactions: dict[str, int] = field(default_factory=dict)


class Normalizer:
    def __init__(self, config: NormalizerConfig):
        self.config = config
        self.redactor = Redactor(config.extra_patterns, types=config.pii_types) if config.pii_enabled else None

    def process(self, texts: list[str | None]) -> list[DocResult]:
        cfg = self.config
        results = [DocResult(text=None) for _ in texts]
        cleaned = clean_texts([t or "" for t in texts], cfg.clean)
        nonempty = [i for i, c in enumerate(cleaned) if c]
        redacted = self.redactor.redact_batch([cleaned[i] for i in nonempty]) if self.redactor is not None else None
        alive: list[int] = []
        for k, i in enumerate(nonempty):
            r = results[i]
            r.text = cleaned[i]
            red = redacted[k] if redacted is not None else None
            if red is not None and red.counts:
                r.text, r.redactions = red.text, red.counts
                content = len("".join(cleaned[i].split()))
                if red.chars / max(content, 1) > cfg.max_pii_char_frac:
                    r.text, r.reason = None, "all_pii"
                    r.detail = f"{red.chars}/{content} characters are PII: {json.dumps(red.counts, sort_keys=True)}"
                    continue
            alive.append(i)
        for i, raw in enumerate(texts):
            if not cleaned[i]:
                results[i].reason, results[i].detail = "empty_after_cleaning", f"{len(raw or '')} characters before cleaning"

        measured = [strip_placeholders(results[i].text) if results[i].redactions else results[i].text for i in alive]
        verdicts = quality_verdicts(measured, cfg.thresholds)
        survivors = []
        for i, text, (reason, detail) in zip(alive, measured, verdicts, strict=True):
            if reason:
                results[i].text, results[i].reason, results[i].detail = None, reason, detail
            else:
                survivors.append((i, text))

        allowed = set(cfg.allowed_languages)
        guesses = detect_languages([text for _, text in survivors], min_score=cfg.min_lang_score)
        for (i, _), guess in zip(survivors, guesses, strict=True):
            r = results[i]
            r.lang = guess.lang
            if not allowed or guess.lang in allowed:
                continue
            if guess.lang == UNDETERMINED:
                if not cfg.drop_undetermined_language:
                    continue
                r.reason = "lang_undetermined"
            else:
                r.reason = "lang_not_allowed"
            r.text = None
            r.detail = f"lang={guess.lang} score={guess.score:.2f} allowed={sorted(allowed)}"
        return results
