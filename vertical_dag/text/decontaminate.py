"""Train / evaluation decontamination that tells leakage from boilerplate, streaming over the corpus.

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
trained on) is the one cut or dropped instead. On a first run nothing is protected. (Only the protected
n-grams found in the evaluation documents' own text are kept; an n-gram that a cut creates across the
cut's join is looked for on the training side, not among the protected texts.)

`share` is, for every document, the fraction of its distinct rare n-grams found on the other side after
decontamination (train vs the evaluation data kept): what the quality gate bounds.

Memory: texts stream past once to be hashed (their distinct n-gram hashes spill to disk by hash range,
hash_spill.py); only the evaluation side's texts (validation, test: the small side) stay in memory, and a
training text is read again only when it shares a rare n-gram with the evaluation side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .hash_spill import (
    HashSpill,
    bucket_edges,
    bucket_of,
    bucketed,
    distinct,
    distinct_per_doc,
    member,
    read_bucket,
)
from .ngrams import NgramSpec
from .overlap import (
    CLEAN,
    CODE,
    CUT,
    DROPPED,
    FLAGGED,
    OUTCOMES,
    Checked,
    DecontaminationRule,
    Hit,
    Side,
    TrainCheck,
    check,
    hash_each,
    shared_fractions,
    without_common,
)

# map(fn, items) -> fn(item) for each item in order: the builtin, or an executor's (stages/executor.py) to run
# the passes over the spill's hash ranges on every core
Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]

# (document indices, texts) of a batch, in document order; called with None for every document, or with
# the sorted indices of the few documents whose text is needed again
TextSource = Callable[[np.ndarray | None], Iterator[tuple[np.ndarray, list[str]]]]

# map_texts(fn, rows) -> fn(indices, texts) of each batch of the documents `rows` (sorted), in document order:
# the texts read and fn run here (in_order), or each batch read and run by a worker (stages/split_io.py)
TextMapper = Callable[[Callable[[np.ndarray, list[str]], Any], np.ndarray], Iterable[Any]]


def in_order(texts: TextSource) -> TextMapper:
    """The TextMapper that reads `texts` here and runs fn on each batch in turn."""
    return lambda fn, rows: (fn(idx, batch) for idx, batch in texts(rows))


# protected(wanted, common) -> (hashes, documents) rows: protected_rows of every protected document, by batch
Protected = Callable[[np.ndarray, np.ndarray], Iterable[tuple[np.ndarray, np.ndarray]]]


def protected_rows(spec: NgramSpec, idx: np.ndarray, texts: list[str], wanted: np.ndarray, common: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(hash, document) of the distinct n-grams of protected documents idx that are in `wanted` and not in
    `common` (both sorted), hashed a batch at once: pure, so any worker can (a text at a time, protecting the
    training side took 4x the whole split)."""
    h, counts = distinct_per_doc(*spec.hashes_batch(texts))
    d = np.repeat(np.asarray(idx, np.int64), counts)
    keep = member(h, wanted)
    if len(common):
        keep &= ~member(h, common)
    return h[keep], d[keep]


@dataclass
class HashedBatch:
    """The distinct n-grams of a batch's selected documents as spill rows (hash_spill.bucketed), and the texts
    of its evaluation documents (kept: the small side)."""

    rows: np.ndarray
    bounds: np.ndarray
    eval_texts: dict[int, str]


def hash_batch(spec: NgramSpec, idx: np.ndarray, texts: list[str], selected: np.ndarray,
               is_eval: np.ndarray) -> HashedBatch:
    """Hash one batch (documents idx, with their `selected` and `is_eval` flags): pure, so any worker can."""
    keep = np.flatnonzero(selected)
    h, w = spec.hashes_batch([texts[k] for k in keep.tolist()])
    h, c = distinct_per_doc(h, w)
    evals = keep[is_eval[keep]]
    return HashedBatch(*bucketed(idx[keep], h, c), {int(idx[k]): texts[k] for k in evals.tolist()})


@dataclass
class Contamination:
    outcome: np.ndarray  # per document: index into OUTCOMES
    share: np.ndarray  # per document (float64)
    hits: dict[int, Hit] = field(default_factory=dict)  # documents overlapping the other side
    texts: dict[int, str] = field(default_factory=dict)  # texts after cutting, of the documents cut
    boilerplate_ngrams: int = 0  # distinct n-grams ignored as boilerplate
    eval_docs_sharing_rare: int = 0  # evaluation documents still sharing a rare n-gram with train afterwards

    def is_(self, outcome: str) -> np.ndarray:
        return self.outcome == CODE[outcome]

    def outcome_of(self, i: int) -> str:
        return OUTCOMES[int(self.outcome[i])]


def _repeated(s: np.ndarray, times: int) -> np.ndarray:
    """The values of the sorted array s that occur more than `times` times."""
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.zeros(0, np.int64)
    return s[starts[np.diff(np.r_[starts, len(s)]) > times]]


def common_hashes(h: np.ndarray, g: np.ndarray, max_groups: int) -> np.ndarray:
    """Sorted hashes found with more than `max_groups` distinct groups among the (hash, group) rows."""
    # only a hash in more rows than that can be in more groups: one sort of the hashes finds those few, and
    # only their rows are sorted by (hash, group) (a lexsort of every row was 10x slower on a spill bucket)
    m = member(h, _repeated(np.sort(h), max_groups))
    h, g = h[m], g[m]
    order = np.lexsort((g, h))
    h, g = h[order], g[order]
    first = np.r_[True, (h[1:] != h[:-1]) | (g[1:] != g[:-1])] if len(h) else np.zeros(0, bool)
    return _repeated(h[first], max_groups)  # distinct (n-gram, group) pairs: an n-gram repeats once per group


def _record(out: Contamination, i: int, found: Checked | None, owner_name: Callable[[int], str | None]) -> None:
    """Document i's check into out, the owner named (an index of the side it was checked against)."""
    if found is None:
        return
    out.outcome[i] = found.outcome
    found.hit.ref = owner_name(found.owner)
    out.hits[i] = found.hit
    if found.text is not None:
        out.texts[i] = found.text


@dataclass(frozen=True)
class _CommonIn:
    """The boilerplate hashes of one spill bucket (with the evaluation items' rows of its range)."""

    groups: Path  # per document, then per item: memory-mapped
    max_groups: int

    def __call__(self, task: tuple[Path, np.ndarray, np.ndarray]) -> np.ndarray:
        path, item_h, item_g = task
        h, d = read_bucket(path)
        groups = np.load(self.groups, mmap_mode="r")
        return common_hashes(np.concatenate([h, item_h]), np.concatenate([groups[d], item_g]), self.max_groups)


@dataclass(frozen=True)
class _RowsIn:
    """The rows of one spill bucket whose hash is wanted and whose document is marked."""

    docs: Path  # boolean per document: memory-mapped

    def __call__(self, task: tuple[Path, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        path, wanted = task
        h, d = read_bucket(path)
        m = member(h, wanted) & np.load(self.docs, mmap_mode="r")[d]
        return h[m], d[m]


RARE_BATCH = 2048  # evaluation texts per task of _RareOf


@dataclass(frozen=True)
class _RareOf:
    """The rare n-grams (distinct, boilerplate left out) of each of a batch of texts, the boilerplate set
    memory-mapped: the evaluation side's, hashed on the workers (at 100x the example, a quarter of a million
    texts took some 5 s on the stage's own thread)."""

    spec: NgramSpec
    common: Path

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        common = np.load(self.common, mmap_mode="r")
        return [without_common(distinct(h), common) for h in hash_each(self.spec, texts)]


class _Pass:
    """One decontamination run over a corpus streamed from a TextSource (see decontaminate)."""

    def __init__(self, texts: TextSource, name: Callable[[int], str], is_eval: np.ndarray, selected: np.ndarray,
                 groups: np.ndarray, eval_items: Sequence[tuple[str, str]], spec: NgramSpec, rule: DecontaminationRule,
                 spill: HashSpill, map_: Mapper = map, map_texts: TextMapper | None = None, threads: int = 1):
        n = len(is_eval)
        self.threads = threads
        self.map_texts = map_texts or in_order(texts)
        self.texts, self.name, self.is_eval, self.selected, self.groups = texts, name, is_eval, selected, groups
        self.items, self.spec, self.rule, self.spill, self.map = eval_items, spec, rule, spill, map_
        self.out = Contamination(np.zeros(n, np.int8), np.zeros(n, np.float64))
        self.eval_text: dict[int, str] = {}  # the evaluation side's texts (n-grams are hashed again when needed)
        self.item_distinct = [distinct(h) for h in hash_each(spec, [t for _, t in eval_items])]
        self.common = np.empty(0, np.uint64)
        self.side_hashes = np.empty(0, np.uint64)  # check_train: the evaluation side's rare n-grams ...
        self.train_rows = (np.empty(0, np.uint64), np.empty(0, np.int64))  # ... and the training rows holding them

    def hash_all(self, hashed: Iterable[HashedBatch] | None) -> None:
        """Every selected document's distinct n-grams to the spill; the evaluation side's texts kept. `hashed`:
        the batches hashed elsewhere (on other cores, in document order); None: hashed here."""
        if hashed is None:
            hashed = (hash_batch(self.spec, idx, texts, self.selected[idx], self.is_eval[idx])
                      for idx, texts in self.texts(None))
        for batch in hashed:
            self.spill.add_bucketed(batch.rows, batch.bounds)
            self.eval_text.update(batch.eval_texts)
        self.spill.finish()

    def find_common(self) -> None:
        """The boilerplate n-grams: in more than max_ngram_families groups, counted one hash range at a time."""
        max_groups = self.rule.max_ngram_families
        if max_groups <= 0 or not (self.spill.rows or self.items):
            return
        n = len(self.is_eval)
        ih = np.concatenate([np.empty(0, np.uint64), *self.item_distinct])
        ig = np.repeat(self.groups[n:n + len(self.items)], [len(d) for d in self.item_distinct])
        ib = bucket_of(ih)
        tasks = [(path, ih[ib == k], ig[ib == k]) for k, path in enumerate(self.spill.paths())]
        found = self.map(_CommonIn(self.spill.share("groups", self.groups), max_groups), tasks)
        self.common = np.concatenate(list(found))
        self.out.boilerplate_ngrams = len(self.common)

    def protect(self, protected: Protected) -> None:
        """Cut or drop evaluation documents overlapping protected (earlier train) documents."""
        evals = sorted(self.eval_text)
        if not evals:
            return
        windows = dict(zip(evals, hash_each(self.spec, [self.eval_text[i] for i in evals]), strict=True))
        c0 = distinct(np.concatenate(list(windows.values())))  # only these can meet an evaluation document's
        hashes, owners = [], []
        for h, d in protected(c0, self.common):
            hashes.append(h)
            owners.append(d)
        if not hashes:
            return
        prot = Side.built(np.concatenate(hashes), np.concatenate(owners), threads=self.threads)
        for i in evals:
            _record(self.out, i, check(self.eval_text[i], windows[i], prot, self.spec, self.rule), self.name)

    def spill_rows(self, wanted: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hashes, documents) of the spill rows whose hash is in `wanted` and whose document is marked in `docs`."""
        hs, ds = [np.empty(0, np.uint64)], [np.empty(0, np.int64)]
        edges = bucket_edges(wanted)  # a bucket's rows need looking up only among its own hash range
        tasks = [(path, wanted[edges[k]:edges[k + 1]]) for k, path in enumerate(self.spill.paths())]
        for h, d in self.map(_RowsIn(self.spill.share("docs", docs)), tasks):
            hs.append(h)
            ds.append(d)
        return np.concatenate(hs), np.concatenate(ds)

    def check_train(self) -> dict[int, np.ndarray]:
        """Check the training documents that share a rare n-gram with the evaluation side (read again, on the
        workers of `map_texts`); their shares; the rare n-grams of those cut, after the cut."""
        out, dropped = self.out, CODE[DROPPED]
        evals = sorted(self.eval_text)
        texts = [out.texts.get(i, self.eval_text[i]) for i in evals]
        common = self.spill.share("common", self.common)
        batches = [texts[a : a + RARE_BATCH] for a in range(0, len(texts), RARE_BATCH)]
        rare = (r for batch in self.map(_RareOf(self.spec, common), batches) for r in batch)
        self.eval_rare = dict(zip(evals, rare, strict=True))
        kept = [i for i in evals if out.outcome[i] != dropped]
        side = Side.of([self.eval_rare[i] for i in kept] + [without_common(d, self.common) for d in self.item_distinct],
                       self.threads)
        names = [self.name(i) for i in kept] + [ident for ident, _ in self.items]
        # kept for eval_shares, which wants nearly the same rows: a pass over the spill is a search per row
        self.side_hashes = side.hashes
        self.train_rows = self.spill_rows(side.hashes, self.selected & ~self.is_eval)
        check = TrainCheck(self.spec, self.rule, self.spill.share("side-hashes", side.hashes),
                            self.spill.share("side-owner", side.owner), common)
        cut_rare: dict[int, np.ndarray] = {}
        for batch in self.map_texts(check, distinct(self.train_rows[1])):
            for i, found, share, own_cut in batch:
                _record(out, i, found, names.__getitem__)
                out.share[i] = share
                if own_cut is not None:
                    cut_rare[i] = own_cut
        return cut_rare

    def eval_shares(self, cut_rare: dict[int, np.ndarray]) -> None:
        """Each evaluation document's share of rare n-grams found in train as kept."""
        out = self.out
        if not self.eval_text:
            return
        # a document's share counts only its own n-grams, so `train` may hold others too: it is the training
        # rows check_train read (the side's n-grams: every kept evaluation document's, and the items'), those
        # of the n-grams only evaluation documents it dropped have, and the cut texts' n-grams. (Gathering
        # every evaluation n-gram first, to look up exactly those, held a second copy of the side.)
        uncut = self.selected & ~self.is_eval & ((out.outcome == CODE[CLEAN]) | (out.outcome == CODE[FLAGGED]))
        h1, d1 = self.train_rows
        found = [h1[uncut[d1]], *cut_rare.values()]
        dropped = [r for i, r in self.eval_rare.items() if out.outcome[i] == CODE[DROPPED]]
        others = distinct(np.concatenate([np.empty(0, np.uint64), *dropped]))
        others = others[~member(others, self.side_hashes)]
        if len(others):
            found.append(self.spill_rows(others, uncut)[0])
        train = distinct(np.concatenate(found))
        docs = list(self.eval_rare)
        for i, share in zip(docs, shared_fractions([self.eval_rare[i] for i in docs], train), strict=True):
            out.share[i] = share
            if out.outcome[i] != CODE[DROPPED] and share > 0:
                out.eval_docs_sharing_rare += 1


DEFAULT_RULE = DecontaminationRule()


def decontaminate(texts: TextSource, name: Callable[[int], str], is_eval: np.ndarray, selected: np.ndarray,
                  groups: np.ndarray, eval_items: Sequence[tuple[str, str]], spec: NgramSpec, spill: HashSpill,
                  rule: DecontaminationRule = DEFAULT_RULE,
                  protected: Protected | None = None,
                  hashed: Iterable[HashedBatch] | None = None, map_: Mapper = map,
                  map_texts: TextMapper | None = None, threads: int = 1) -> Contamination:
    """Decontaminate the selected training documents against the selected evaluation ones and the
    evaluation files' items.

    texts: the corpus's texts by batch (TextSource); name(i): document i's id; is_eval / selected: per
    document; groups: an integer group (template family) per document, then one per evaluation item;
    spill: an empty HashSpill, left holding every selected document's distinct n-grams (original texts);
    protected(wanted, common): the current training documents an earlier run already trained on, as
    protected_rows of their texts as trained on (on every core, or here); hashed: the first pass's batches (hash_batch) computed elsewhere, e.g. on every core,
    in document order (default: hashed here from `texts`); map_: runs the passes over the spill's hash ranges
    (default: here, one after another); map_texts: reads and checks again the training documents that share
    rare n-grams with the evaluation side (TextMapper; default: in_order(texts)); threads: the threads this
    process may sort the evaluation side's n-grams on (Side.built)."""
    run = _Pass(texts, name, np.asarray(is_eval, bool), np.asarray(selected, bool), np.asarray(groups, np.int64),
                eval_items, spec, rule, spill, map_, map_texts, threads)
    run.hash_all(hashed)
    run.find_common()
    if protected is not None:
        run.protect(protected)
    run.eval_shares(run.check_train())
    return run.out


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
