"""Input processing at inference time, identical to what the corpus went through before training.

A prompt is cleaned with the same options as the normalize stage (Unicode form, markup, whitespace,
traditional -> simplified when the project used it) and, when asked, PII-redacted with the same
detectors, so an ID number typed into a prompt never reaches the model or a log line. `generate`, the
server and the evaluation stage all build their `InputProcessor` from params with `from_params`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..text.clean import CleanOptions, clean_text
from ..text.pii import Redactor


@dataclass
class ProcessedText:
    text: str
    redactions: dict[str, int] = field(default_factory=dict)  # placeholder name -> count


@dataclass
class InputProcessor:
    clean: CleanOptions | None = CleanOptions()  # None: prompts go to the model as typed
    redactor: Redactor | None = None

    @classmethod
    def from_params(cls, params: Any) -> InputProcessor:
        """The normalize section's cleaning and PII settings, switched by finetune.generation
        (normalize_prompts, redact_pii)."""
        norm, gen = params.normalize, params.finetune.generation
        clean = None
        if gen.normalize_prompts and norm.enabled:
            clean = CleanOptions(unicode_form=norm.unicode_form, strip_markup=norm.strip_markup,
                                 traditional_to_simplified=norm.traditional_to_simplified)
        redactor = None
        if gen.redact_pii:
            redactor = Redactor(norm.pii.extra_patterns, types=tuple(norm.pii.types))
        return cls(clean=clean, redactor=redactor)

    def text(self, raw: str) -> ProcessedText:
        out = clean_text(raw, self.clean) if self.clean is not None else raw
        if self.redactor is None:
            return ProcessedText(out)
        red = self.redactor.redact(out)
        return ProcessedText(red.text, dict(red.counts))

    def messages(self, messages: Sequence[Mapping[str, str]]) -> tuple[list[dict[str, str]], dict[str, int]]:
        """Every message's content processed; (messages, redaction counts summed over them)."""
        counts: Counter[str] = Counter()
        out = []
        for m in messages:
            done = self.text(m["content"])
            counts.update(done.redactions)
            out.append({"role": m["role"], "content": done.text})
        return out, dict(counts)
