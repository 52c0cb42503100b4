"""Train / evaluation decontamination that tells leakage from boilerplate.

N-grams are word 13-grams, or character n-grams for CJK text (vertical_dag/text/ngrams.py). Three ideas:

- **Boilerplate does not count.** An n-gram found in more than `max_ngram_families` template families of
  the corpus (every split plus the evaluation files; a family is a set of variants of one form, see
  dedup_index.py, and a document without one is its own) is a standard clause, a header, a formula:
  sharing it with an evaluation document is not leakage, so it is ignored (as NeMo Curator ignores n-grams
  with many matches). Families, not documents, are counted, so the clauses of one form stay *rare* however
  many variants of it there are: they are leakage if that form's variants sit on both sides.
- **Coverage, not one match.** A document's coverage is the share of its tokens covered by rare n-grams it
  shares with the other side. A training document is *contaminated* when its coverage reaches
  `min_coverage`: it is mostly a copy of evaluation text.
- **Cut, then drop.** With action `cut`, a training document below that coverage keeps its text minus the
  shared spans (a `redacted` ledger row), one at or above it is dropped; `dropped` drops contaminated
  documents and leaves the rest alone; `flagged` keeps everything and only marks contaminated documents.

A training document that was already in train before (the model may have been trained on it; removing it
now would not undo that) is protected: a *new* evaluation document overlapping it (its text as last
trained on) is the one cut or dropped instead. On a first run nothing is protected.

`share` is, for every document, the fraction of its distinct rare n-grams found on the other side after
decontamination (train vs the evaluation data kept): what the quality gate bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .ngrams import NgramSpec

CLEAN, CUT, DROPPED, FLAGGED = "clean", "cut", "dropped", "flagged"


@dataclass(frozen=True)
class DecontaminationRule:
    max_ngram_families: int = 10  # n-grams in more families than this are boilerplate; 0: every n-gram counts
    min_coverage: float = 0.5  # share of a document's tokens under rare shared n-grams that contaminates it
    action: str = CUT  # cut | dropped | flagged


@dataclass
class Contamination:
    outcome: list[str]  # clean / cut / dropped / flagged, per document
    coverage: list[float]  # share of tokens covered by rare n-grams shared with the other side
    shared: list[int]  # distinct rare n-grams shared with the other side
    ref: list[str | None]  # the document on the other side owning the first shared n-gram
    texts: list[str]  # texts after cutting
    cut_chars: list[int]
    share: list[float] = field(default_factory=list)
    boilerplate_ngrams: int = 0  # distinct n-grams ignored as boilerplate
    eval_docs_sharing_rare: int = 0  # evaluation documents still sharing a rare n-gram with train afterwards


class _Side:
    """Sorted distinct n-gram hashes of one side, each with the first document (name) that had it."""

    def __init__(self, arrays: list[np.ndarray], names: list[str]):
        self.names = names
        if arrays:
            h = np.concatenate(arrays)
            o = np.concatenate([np.full(len(a), k, np.int64) for k, a in enumerate(arrays)])
            order = np.argsort(h, kind="stable")
            h, o = h[order], o[order]
            first = np.r_[True, h[1:] != h[:-1]] if len(h) else np.zeros(0, bool)
            self.hashes, self.owner = h[first], o[first]
        else:
            self.hashes, self.owner = np.empty(0, np.uint64), np.empty(0, np.int64)

    def hits(self, h: np.ndarray) -> np.ndarray:
        if not len(self.hashes) or not len(h):
            return np.zeros(len(h), bool)
        pos = np.searchsorted(self.hashes, h).clip(max=len(self.hashes) - 1)
        return self.hashes[pos] == h

    def owner_of(self, h: np.ndarray) -> str | None:
        pos = np.searchsorted(self.hashes, h[:1]).clip(max=len(self.hashes) - 1)
        return self.names[int(self.owner[pos[0]])] if len(h) else None


def _distinct(a: np.ndarray) -> np.ndarray:
    a = np.sort(a)
    return a[np.r_[True, a[1:] != a[:-1]]] if len(a) else a


def _covered(hit: np.ndarray, n: int) -> np.ndarray:
    """Token mask covered by the windows marked in `hit` (window k covers tokens k .. k+n-1)."""
    m = len(hit) + n - 1 if len(hit) else 0
    delta = np.zeros(m + 1, np.int32)
    starts = np.flatnonzero(hit)
    np.add.at(delta, starts, 1)
    np.add.at(delta, starts + n, -1)
    return np.cumsum(delta[:-1]) > 0


def cut_spans(text: str, spec: NgramSpec, covered: np.ndarray) -> tuple[str, int]:
    """The text without the characters of covered tokens (each run of them becomes one line break)."""
    starts, ends = spec.token_spans(text)
    edges = np.diff(np.r_[0, covered.astype(np.int8), 0])
    run_start, run_end = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    pieces, pos, removed = [], 0, 0
    for a, b in zip(starts[run_start].tolist(), ends[run_end].tolist(), strict=True):
        pieces.append(text[pos:a].rstrip())
        removed += b - a
        pos = b
    pieces.append(text[pos:].lstrip())
    return "\n".join(p for p in pieces if p), removed


def boilerplate(distinct: Sequence[np.ndarray], groups: Sequence[str], max_groups: int) -> np.ndarray:
    """Sorted n-gram hashes found in more than `max_groups` groups (families), given each document's
    distinct n-grams and its group."""
    if max_groups <= 0 or not distinct:
        return np.empty(0, np.uint64)
    codes = {g: k for k, g in enumerate(dict.fromkeys(groups))}
    h = np.concatenate(list(distinct))
    g = np.repeat(np.array([codes[x] for x in groups], np.int64), [len(d) for d in distinct])
    order = np.lexsort((g, h))
    h, g = h[order], g[order]
    first = np.r_[True, (h[1:] != h[:-1]) | (g[1:] != g[:-1])] if len(h) else np.zeros(0, bool)
    values, counts = np.unique(h[first], return_counts=True)  # distinct (n-gram, group) pairs per n-gram
    return values[counts > max_groups]


def _rare(h: np.ndarray, common: np.ndarray) -> np.ndarray:
    if not len(common) or not len(h):
        return h
    pos = np.searchsorted(common, h).clip(max=len(common) - 1)
    return h[common[pos] != h]


def _check(out: Contamination, i: int, text: str, h: np.ndarray, other: _Side, spec: NgramSpec,
           rule: DecontaminationRule) -> None:
    """Coverage of document i by the other side's rare n-grams, and what the rule does about it."""
    hit = other.hits(h)
    if not hit.any():
        return
    n = spec.n_for(text)
    covered = _covered(hit, n)
    shared = _distinct(h[hit])
    out.coverage[i] = round(float(covered.mean()), 6)
    out.shared[i], out.ref[i] = len(shared), other.owner_of(shared)
    if out.coverage[i] >= rule.min_coverage:
        out.outcome[i] = FLAGGED if rule.action == FLAGGED else DROPPED
    elif rule.action == CUT:
        out.texts[i], out.cut_chars[i] = cut_spans(text, spec, covered)
        out.outcome[i] = CUT
        for _ in range(2):  # joining the pieces can make a new shared n-gram across a cut: cut that too
            h2 = spec.hashes(out.texts[i])
            hit2 = other.hits(h2)
            if not hit2.any():
                break
            out.texts[i], more = cut_spans(out.texts[i], spec, _covered(hit2, spec.n_for(out.texts[i])))
            out.cut_chars[i] += more


def decontaminate(ids: Sequence[str], texts: Sequence[str], is_eval: Sequence[bool],
                  protected: dict[str, str], eval_items: Sequence[tuple[str, str]], spec: NgramSpec,
                  rule: DecontaminationRule = DecontaminationRule(),
                  families: Sequence[str] | None = None) -> Contamination:
    """Decontaminate train against the evaluation side (validation, test, evaluation files).
    `protected`: doc_id -> text, as trained on, of train documents kept in train by an earlier run;
    `families`: each document's template family (None: every document its own)."""
    n = len(ids)
    out = Contamination([CLEAN] * n, [0.0] * n, [0] * n, [None] * n, list(texts), [0] * n, [0.0] * n)
    windows = [spec.hashes(t) for t in texts]
    distinct = [_distinct(w) for w in windows]
    item_distinct = [_distinct(spec.hashes(t)) for _, t in eval_items]
    groups = list(families or ids) + [ident for ident, _ in eval_items]
    common = boilerplate(distinct + item_distinct, groups, rule.max_ngram_families)
    out.boilerplate_ngrams = len(common)
    rare = [_rare(d, common) for d in distinct]
    item_rare = [_rare(d, common) for d in item_distinct]

    def rare_now(i: int) -> np.ndarray:  # a document's rare n-grams after any cut
        return rare[i] if out.outcome[i] != CUT else _rare(_distinct(spec.hashes(out.texts[i])), common)

    evals = [i for i in range(n) if is_eval[i]]
    trains = [i for i in range(n) if not is_eval[i]]

    old_train = [i for i in trains if ids[i] in protected]
    if old_train and evals:
        prot = _Side([_rare(_distinct(spec.hashes(protected[ids[i]])), common) for i in old_train],
                     [ids[i] for i in old_train])
        for i in evals:
            _check(out, i, texts[i], windows[i], prot, spec, rule)

    kept_eval = [i for i in evals if out.outcome[i] != DROPPED]
    eval_side = _Side([rare_now(i) for i in kept_eval] + item_rare,
                      [ids[i] for i in kept_eval] + [ident for ident, _ in eval_items])
    for i in trains:
        _check(out, i, texts[i], windows[i], eval_side, spec, rule)

    final_train = [i for i in trains if out.outcome[i] != DROPPED]
    final = [rare_now(i) for i in range(n)]
    train_side = _Side([final[i] for i in final_train], [ids[i] for i in final_train])
    eval_side = _Side([final[i] for i in kept_eval] + item_rare, [])
    for i in range(n):
        own = final[i]
        out.share[i] = round(float((train_side if is_eval[i] else eval_side).hits(own).mean()), 6) if len(own) else 0.0
        if is_eval[i] and out.outcome[i] != DROPPED and out.share[i] > 0:
            out.eval_docs_sharing_rare += 1
    return out


# Per-domain defaults. Statutes, contracts, clinical notes, filings and manuals repeat standard clauses across
# many documents, so these domains treat an n-gram in more than 5 documents as boilerplate and use longer
# character n-grams for CJK (25 characters match shared legal formulas such as "违反本法规定...依法追究刑事责任").
PRESETS: dict[str, dict[str, object]] = {
    "general": {"word_ngram": 13, "char_ngram": 25, "max_ngram_families": 10, "min_coverage": 0.5, "action": CUT},
    **{domain: {"word_ngram": 13, "char_ngram": 50, "max_ngram_families": 5, "min_coverage": 0.5, "action": CUT}
       for domain in ("legal", "medical", "finance", "technical")},
}


def resolve_settings(preset: str, overrides: dict[str, object] | None = None) -> dict[str, object]:
    """The preset's values, then every override that is not None (params win over the preset)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown decontamination preset {preset!r}; presets: {', '.join(PRESETS)}")
    values = dict(PRESETS[preset])
    values.update({k: v for k, v in (overrides or {}).items() if k in values and v is not None})
    return values


def spec_and_rule(settings: dict[str, object]) -> tuple[NgramSpec, DecontaminationRule]:
    return (NgramSpec(word_n=int(settings["word_ngram"]), char_n=int(settings["char_ngram"])),
            DecontaminationRule(int(settings["max_ngram_families"]), float(settings["min_coverage"]),
                                str(settings["action"])))
