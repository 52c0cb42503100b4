"""One document against the other side of decontamination: the share of its tokens under the other side's
rare n-grams, what the rule does about it (cut the shared spans, drop, flag), and its share afterwards.

Pure functions over a document's text and n-gram hashes and the other side's sorted hashes, so a worker can
check a batch of documents on its own (TrainCheck: the other side memory-mapped from the spill's folder);
decontaminate.py decides which documents meet which side and records what these find.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .hash_spill import distinct, member
from .ngrams import NgramSpec

CLEAN, CUT, DROPPED, FLAGGED = "clean", "cut", "dropped", "flagged"
OUTCOMES = (CLEAN, CUT, DROPPED, FLAGGED)  # Contamination.outcome holds indices into this
CODE = {o: k for k, o in enumerate(OUTCOMES)}


@dataclass(frozen=True)
class DecontaminationRule:
    max_ngram_families: int = 10  # n-grams in more families than this are boilerplate; 0: every n-gram counts
    min_coverage: float = 0.5  # share of a document's tokens under rare shared n-grams that contaminates it
    action: str = CUT  # cut | dropped | flagged


@dataclass
class Hit:
    """A document that shares rare n-grams with the other side."""

    coverage: float  # share of tokens covered by rare n-grams shared with the other side
    shared: int  # distinct rare n-grams shared with the other side
    ref: str | None  # the document on the other side owning the first shared n-gram
    cut_chars: int = 0


RANGED_ROWS = 1 << 20  # below this a side builds in one sort in tens of milliseconds
HASH_CHUNK = 8192  # texts hashed at once: the evaluation side of 100x the example is 260k texts


def hash_each(spec: NgramSpec, texts: Sequence[str]) -> Iterator[np.ndarray]:
    """Every text's n-gram hashes (spec.hashes), hashed HASH_CHUNK texts at a time: a consumer that keeps
    what it derives from them (distinct rare n-grams) holds one chunk's hashes at a time, not the corpus's."""
    for a in range(0, len(texts), HASH_CHUNK):
        h, w = spec.hashes_batch(list(texts[a : a + HASH_CHUNK]))
        yield from (np.split(h, np.cumsum(w)[:-1]) if len(w) else [])


class Side:
    """Sorted distinct n-gram hashes of one side, each with the index of the first document that had it."""

    def __init__(self, hashes: np.ndarray, owner: np.ndarray):
        self.hashes, self.owner = hashes, owner

    @classmethod
    def built(cls, hashes: np.ndarray, owner: np.ndarray, owner_ascending: bool = False, threads: int = 1) -> Side:
        """The side of rows (hashes[k], owner[k]): each distinct hash with its smallest owner; a large side is
        built a hash range at a time, on `threads` threads."""
        if len(hashes) >= RANGED_ROWS:
            return cls._built_by_range(hashes, owner, owner_ascending, threads)
        return cls._built_in_one_sort(hashes, owner, owner_ascending)

    @classmethod
    def _built_in_one_sort(cls, hashes: np.ndarray, owner: np.ndarray, owner_ascending: bool) -> Side:
        # an unstable sort, then the smallest owner of each run of equal hashes: what a stable sort by (hash,
        # owner) puts first (numpy's AVX-512 sort: 4.0 s for 50M hashes where a stable one took 7.0)
        order = np.argsort(hashes)
        h = hashes[order]
        if not len(h):
            return cls(h, owner[:0])
        starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
        if owner_ascending:  # the smallest owner sits at the smallest position: no gather of every owner
            first = owner[np.minimum.reduceat(order, starts)]  # the evaluation side at 100x: 15M rows
        else:
            first = np.minimum.reduceat(owner[order], starts)
        return cls(h[starts], first)

    @classmethod
    def _built_by_range(cls, hashes: np.ndarray, owner: np.ndarray, owner_ascending: bool, threads: int) -> Side:
        # a range's rows keep their order (owners still ascend there), and the ranges' sides joined in order
        # are the side of all rows. Four ranges per thread: the temporaries of the ranges built at once are
        # half of one sort's over all rows, and a smaller sort misses the cache less; numpy's sorts, gathers
        # and reductions release the GIL, so the threads share the cores. The evaluation side at 100x (15M
        # rows, split's peak): 3.5 s and 420 MB of temporaries in one sort, 2.4 s and 250 MB a range at a
        # time on one thread, 1.4 s on two.
        bits = min(int(threads - 1).bit_length() + 2, 8)
        top = (hashes >> np.uint64(64 - bits)).astype(np.uint8)

        def one(k: int) -> Side:
            rows = top == k
            return cls._built_in_one_sort(hashes[rows], owner[rows], owner_ascending)

        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                sides = list(pool.map(one, range(2**bits)))
        else:
            sides = [one(k) for k in range(2**bits)]
        return cls(np.concatenate([s.hashes for s in sides]), np.concatenate([s.owner for s in sides]))

    @classmethod
    def of(cls, arrays: Sequence[np.ndarray], threads: int = 1) -> Side:
        """The side of documents 0, 1, ... holding arrays[0], arrays[1], ..."""
        if not arrays:
            return cls(np.empty(0, np.uint64), np.empty(0, np.int32))
        o = np.repeat(np.arange(len(arrays), dtype=np.int32), [len(a) for a in arrays])
        return cls.built(np.concatenate(arrays).astype(np.uint64, copy=False), o, owner_ascending=True,
                         threads=threads)

    def hits(self, h: np.ndarray) -> np.ndarray:
        return member(h, self.hashes)

    def owner_of(self, h: np.ndarray) -> int:
        """The owner of h[0] (h: hashes the side holds)."""
        pos = np.searchsorted(self.hashes, h[:1]).clip(max=len(self.hashes) - 1)
        return int(self.owner[pos[0]])


def covered_tokens(hit: np.ndarray, n: int) -> np.ndarray:
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


def without_common(h: np.ndarray, common: np.ndarray) -> np.ndarray:
    return h[~member(h, common)] if len(common) and len(h) else h


@dataclass
class Checked:
    """What check found in a document that shares rare n-grams with the other side: its outcome, the overlap,
    the other side's document (an index there) owning the first shared n-gram, its text after a cut."""

    outcome: int
    hit: Hit
    owner: int
    text: str | None = None


def check(text: str, h: np.ndarray, other: Side, spec: NgramSpec, rule: DecontaminationRule,
           hit: np.ndarray | None = None) -> Checked | None:
    """Coverage of a document (text, its n-gram hashes h) by the other side's rare n-grams, and what the rule
    does about it; None when they share none. hit: which of h the other side holds, when the caller looked up
    many documents' n-grams at once. Pure, so any worker can."""
    hit = other.hits(h) if hit is None else hit
    if not hit.any():
        return None
    n = spec.n_for(text)
    covered = covered_tokens(hit, n)
    shared = distinct(h[hit])
    found = Checked(CODE[CLEAN], Hit(round(float(covered.mean()), 6), len(shared), None), other.owner_of(shared))
    if found.hit.coverage >= rule.min_coverage:
        found.outcome = CODE[FLAGGED if rule.action == FLAGGED else DROPPED]
    elif rule.action == CUT:
        cut, found.hit.cut_chars = cut_spans(text, spec, covered)
        found.outcome = CODE[CUT]
        for _ in range(2):  # joining the pieces can make a new shared n-gram across a cut: cut that too
            hit2 = other.hits(spec.hashes(cut))
            if not hit2.any():
                break
            cut, more = cut_spans(cut, spec, covered_tokens(hit2, spec.n_for(cut)))
            found.hit.cut_chars += more
        found.text = cut
    return found


def shared_fraction(own: np.ndarray, other: np.ndarray) -> float:
    return round(float(member(own, other).mean()), 6) if len(own) else 0.0


def shared_fractions(owns: Sequence[np.ndarray], other: np.ndarray, chunk: int = 1 << 22) -> list[float]:
    """shared_fraction of each array, the same values, looked up about `chunk` values at a time: a lookup
    per array missed the cache at every step (250k evaluation documents: 5 s at 100x the example)."""
    lens = np.fromiter((len(o) for o in owns), np.int64, len(owns))
    hits = np.zeros(len(owns), np.int64)
    ends = np.cumsum(lens)
    a = 0
    while a < len(owns):
        b = max(a + 1, int(np.searchsorted(ends, ends[a] - lens[a] + chunk, side="right")))
        found = np.r_[0, np.cumsum(member(np.concatenate([np.empty(0, np.uint64), *owns[a:b]]), other))]
        at = np.r_[0, np.cumsum(lens[a:b])]
        hits[a:b] = found[at[1:]] - found[at[:-1]]
        a = b
    return [round(float(h / n), 6) if n else 0.0 for h, n in zip(hits.tolist(), lens.tolist(), strict=True)]


@dataclass(frozen=True)
class TrainCheck:
    """check of a batch of training documents against the evaluation side (memory-mapped from the spill's
    folder): per document (index, what check found, its share, its rare n-grams after a cut if cut)."""

    spec: NgramSpec
    rule: DecontaminationRule
    side_hashes: Path
    side_owner: Path
    common: Path

    def __call__(self, idx: np.ndarray, texts: list[str]) -> list[tuple[int, Checked | None, float, np.ndarray | None]]:
        side = Side(np.load(self.side_hashes, mmap_mode="r"), np.load(self.side_owner, mmap_mode="r"))
        common = np.load(self.common, mmap_mode="r")
        hs = list(hash_each(self.spec, texts))
        # the batch's n-grams looked up at once: sorted, successive searches of the large side share the
        # cache (a lookup per document missed it at every step: 7 s at 100x the example)
        hits = np.split(side.hits(np.concatenate([np.empty(0, np.uint64), *hs])), np.cumsum([len(h) for h in hs])[:-1])
        out = []
        for i, t, h, hit in zip(idx.tolist(), texts, hs, hits, strict=True):
            found = check(t, h, side, self.spec, self.rule, hit)
            if found is not None and found.text is not None:
                own = without_common(distinct(self.spec.hashes(found.text)), common)
                out.append((i, found, shared_fraction(own, side.hashes), own))
            else:  # its rare n-grams on the other side are the ones hit: no second lookup
                own = without_common(distinct(h), common)
                share = round(len(without_common(distinct(h[hit]), common)) / len(own), 6) if len(own) else 0.0
                out.append((i, found, share, None))
        return out
