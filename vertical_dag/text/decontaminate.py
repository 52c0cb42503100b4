"""Train / evaluation decontamination by shared n-grams (word 13-grams, or character n-grams for CJK).

The usual rule: a training document sharing an n-gram with evaluation data (validation, test, task files) is
contaminated. One refinement keeps the split stable as data grows: a training document that was already in
train before (the model may have been trained on it; removing it now would not undo that) is protected, and
a *new* evaluation document that overlaps it is the contaminated one instead. On a first run nothing is
protected and the rule is the usual one.

`share` is, for every document, the fraction of its distinct n-grams found on the other side (train vs. the
evaluation data kept), what a quality gate can bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .ngrams import NgramIndex, NgramSpec


@dataclass
class Contamination:
    contaminated: list[bool]
    shared: list[int]  # n-grams shared with the other side when found contaminated
    ref: list[str | None]  # the document on the other side it overlaps
    share: list[float]


def _share(index: NgramIndex, text: str) -> float:
    n_own = len(np.unique(index.spec.hashes(text)))
    return index.overlap(text)[0] / n_own if n_own else 0.0


def decontaminate(ids: Sequence[str], texts: Sequence[str], is_eval: Sequence[bool], protected: set[str],
                  eval_items: Sequence[tuple[str, str]], spec: NgramSpec, min_shared: int = 1,
                  keep_contaminated: bool = False) -> Contamination:
    """Mark contaminated documents. `protected`: ids of train documents kept in train by an earlier run.
    `keep_contaminated` (flag mode): contaminated documents stay in their side's index."""
    n = len(ids)
    out = Contamination([False] * n, [0] * n, [None] * n, [0.0] * n)
    evals = [i for i in range(n) if is_eval[i]]
    trains = [i for i in range(n) if not is_eval[i]]

    old_train = [i for i in trains if ids[i] in protected]
    if old_train and evals:
        prot = NgramIndex(spec)
        for i in old_train:
            prot.add(ids[i], texts[i])
        prot.freeze()
        for i in evals:
            shared, ref = prot.overlap(texts[i])
            if shared >= min_shared:
                out.contaminated[i], out.shared[i], out.ref[i] = True, shared, ref

    eval_index = NgramIndex(spec)
    for i in evals:
        if keep_contaminated or not out.contaminated[i]:
            eval_index.add(ids[i], texts[i])
    for ident, text in eval_items:
        eval_index.add(ident, text)
    eval_index.freeze()

    train_index = NgramIndex(spec)
    for i in trains:
        shared, ref = eval_index.overlap(texts[i])
        if shared >= min_shared:
            out.contaminated[i], out.shared[i], out.ref[i] = True, shared, ref
            out.share[i] = round(_share(eval_index, texts[i]), 6)
        if keep_contaminated or not out.contaminated[i]:
            train_index.add(ids[i], texts[i])
    train_index.freeze()
    for i in evals:
        out.share[i] = round(_share(train_index, texts[i]), 6)
    return out
