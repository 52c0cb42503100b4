"""Train/eval contamination, measured by the gate's own definition rather than read from the split stage's
`contamination` column: for each validation/test document, the share of its distinct rare n-grams that also
occur in train.

N-grams are the split stage's own definition (vertical_dag.text.ngrams: word n-grams, or character n-grams
for CJK, with the split stage's settings). Rare means not boilerplate: an n-gram found in more than
split.decontaminate's max_ngram_families template families of the split output is a standard clause shared
by many forms, not leakage (vertical_dag.text.decontaminate); the clauses of one form count however many
variants of it there are.

`measure` works on (document, distinct n-gram hash) rows spilled to disk by hash range
(vertical_dag/text/hash_spill.py) and settles one hash range at a time (`measure_bucket`, on any core), so
memory does not grow with the corpus. The rows come from the split files' texts (`spill_texts`), or from the split stage, which hashed
every text already and records the result as a profile while it writes (split_profile.py), so the gate
does not hash the corpus a second time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..text.hash_spill import HashSpill, bucketed, distinct, distinct_inverse, distinct_per_doc, member
from ..text.ngrams import NgramSpec


def _settings(params: Any) -> dict[str, Any]:
    from ..stages.split import decontamination_settings

    return decontamination_settings(params)


def ngram_spec(params: Any) -> NgramSpec:
    """The n-grams the split stage decontaminates with."""
    settings = _settings(params)
    return NgramSpec(word_n=int(settings["word_ngram"]), char_n=int(settings["char_ngram"]))


def max_families(params: Any) -> int:
    return int(_settings(params)["max_ngram_families"])


def measure_bucket(h: np.ndarray, d: np.ndarray, is_eval: np.ndarray, families: np.ndarray, max_groups: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One bucket's part of `measure`: (evaluation documents, their distinct rare n-grams in the bucket, how
    many of those are in train). Pure, so buckets can be settled on any core."""
    from ..text.decontaminate import common_hashes

    wanted = distinct(h[is_eval[d]])
    m = member(h, wanted)  # every document's occurrences of the evaluation side's n-grams
    h, d = h[m], d[m]
    common = common_hashes(h, families[d], max_groups) if max_groups > 0 else np.empty(0, np.uint64)
    in_train = distinct(h[~is_eval[d]])
    own = is_eval[d] & ~member(h, common)
    docs, at, _ = distinct_inverse(d[own])
    total = np.bincount(at, minlength=len(docs))
    found = np.bincount(at, weights=member(h[own], in_train), minlength=len(docs)).astype(np.int64)
    return docs, total, found


def measure(buckets: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int) -> list[float]:
    """Per document: for evaluation ones the share of their distinct rare n-grams found in train, 0.0 for
    train ones; buckets: measure_bucket of every chunk of (hash, document) rows that shares no hash with
    another (HashSpill buckets), so each chunk is settled alone; n: documents."""
    total, found = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for docs, t, f in buckets:
        total[docs] += t
        found[docs] += f
    out = [0.0] * n
    for i in np.flatnonzero(total).tolist():
        out[i] = round(float(found[i] / total[i]), 6)
    return out


def spill_texts(spill: HashSpill, texts: Iterable[tuple[np.ndarray, list[str | None]]], spec: NgramSpec) -> HashSpill:
    """Every text's distinct n-gram hashes into the spill, a batch at a time."""
    for idx, batch in texts:
        h, w = spec.hashes_batch([t or "" for t in batch])
        spill.add_bucketed(*bucketed(idx, *distinct_per_doc(h, w)))
    spill.finish()
    return spill
