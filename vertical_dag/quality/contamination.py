"""Train/eval contamination, measured by the gate's own definition rather than read from the split stage's
`contamination` column: for each validation/test document, the share of its distinct rare n-grams that also
occur in train.

N-grams are the split stage's own definition (vertical_dag.text.ngrams: word n-grams, or character n-grams
for CJK, with the split stage's settings). Rare means not boilerplate: an n-gram found in more than
split.decontaminate's max_ngram_families template families of the split output is a standard clause shared
by many forms, not leakage (vertical_dag.text.decontaminate); the clauses of one form count however many
variants of it there are.

`measure` works on (document, distinct n-gram hash) rows streamed twice, keeping only the n-grams of the
evaluation side (validation + test) in memory. The rows come from the split files' texts (`rows_from_texts`),
or from the split stage, which hashed every text already and records the result as a profile while it writes
(vertical_dag/quality/split_profile.py), so the gate does not hash the corpus a second time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from ..text.hash_spill import distinct, member

Rows = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]  # (document indices, hashes), distinct per document


def _settings(params: Any) -> dict[str, Any]:
    from ..stages.split import decontamination_settings

    return decontamination_settings(params)


def ngram_hasher(params: Any) -> Callable[[str], np.ndarray]:
    """text -> n-gram hashes, the way the split stage decontaminates."""
    from ..text.ngrams import NgramSpec

    settings = _settings(params)
    return NgramSpec(word_n=int(settings["word_ngram"]), char_n=int(settings["char_ngram"])).hashes


def max_families(params: Any) -> int:
    return int(_settings(params)["max_ngram_families"])


def measure(rows: Rows, is_eval: np.ndarray, families: np.ndarray, max_groups: int) -> list[float]:
    """Per document: for evaluation ones the share of their distinct rare n-grams found in train, 0.0 for
    train ones. families: an integer template family per document."""
    from ..text.decontaminate import common_hashes

    n = len(is_eval)
    own_h, own_d = [np.empty(0, np.uint64)], [np.empty(0, np.int64)]
    for d, h in rows():
        m = is_eval[d]
        own_h.append(h[m])
        own_d.append(d[m])
    eh, ed = np.concatenate(own_h), np.concatenate(own_d)
    wanted = distinct(eh)
    hs, gs, train = [np.empty(0, np.uint64)], [np.empty(0, np.int64)], [np.empty(0, bool)]
    for d, h in rows():  # every document's occurrences of the evaluation side's n-grams
        m = member(h, wanted)
        hs.append(h[m])
        gs.append(families[d[m]])
        train.append(~is_eval[d[m]])
    h, g, t = np.concatenate(hs), np.concatenate(gs), np.concatenate(train)
    common = common_hashes(h, g, max_groups) if max_groups > 0 else np.empty(0, np.uint64)
    in_train = distinct(h[t])
    rare = ~member(eh, common)
    ed, hit = ed[rare], member(eh[rare], in_train)
    total = np.bincount(ed, minlength=n)
    found = np.bincount(ed, weights=hit, minlength=n)
    out = [0.0] * n
    for i in np.flatnonzero(total).tolist():
        out[i] = round(float(found[i] / total[i]), 6)
    return out


def rows_from_texts(texts: Iterable[tuple[np.ndarray, list[str | None]]], hasher: Callable[[str], np.ndarray]
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(document indices, distinct hashes) per batch of (document indices, texts)."""
    for idx, batch in texts:
        arrays = [distinct(hasher(t or "")) for t in batch]
        yield np.repeat(idx, [len(a) for a in arrays]), np.concatenate([np.empty(0, np.uint64), *arrays])
