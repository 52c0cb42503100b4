"""Candidate pairs for a batch (LSH bands shared with earlier documents) and their verification.

Both are bounded per document, so a corpus that is mostly copies of a few texts costs no more per document
than one without duplicates: at most `max_candidates` earliest documents per shared band, and at most
`max_verify` exact-Jaccard checks per document, taken in order of MinHash estimate (highest first; ties: the
earliest) and stopping at the first that reaches the threshold. In a large cluster that first candidate is
almost always a match, so a duplicate costs one check. All checks of a round are one vectorised computation
(minhash.pair_jaccard), never a Python loop per pair.
"""

from __future__ import annotations

import numpy as np

from .hash_spill import distinct
from .key_index import KeyIndex
from .lsh import BatchBands
from .minhash import pair_jaccard, segment_positions

VERIFY_MARGIN = 0.15  # candidates whose estimate is this far below the threshold are not worth verifying


def candidates(index: KeyIndex, bands: BatchBands, eligible: np.ndarray, g0: int, max_candidates: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(batch position j, earlier document number i) pairs sharing a band of `index`, at most
    max_candidates of the earliest documents per (j, band), whether those are in earlier batches or
    this one (eligible ones)."""
    b = bands.keys.shape[1]
    js = np.flatnonzero(eligible)
    flat = bands.keys[js].ravel()
    q_j = np.repeat(js, b)
    order = bands.order_of(eligible)  # the stable argsort of flat (q_j is already non-decreasing)
    q, d = index.lookup(flat, max_candidates, order)
    old_count = np.bincount(q, minlength=len(flat))
    pairs_j, pairs_i = [q_j[q]], [d]
    # in-batch: sort (key, position); each member pairs with the earliest members before it
    k_sorted, j_sorted = flat[order], q_j[order]
    group_start = np.flatnonzero(np.r_[True, k_sorted[1:] != k_sorted[:-1]])
    sizes = np.diff(np.r_[group_start, len(flat)])
    rank = np.arange(len(flat)) - np.repeat(group_start, sizes)
    take = np.maximum(0, np.minimum(rank, max_candidates - old_count[order]))
    if take.any():
        src = np.repeat(np.arange(len(flat)), take)
        within = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
        partner = np.repeat(np.repeat(group_start, sizes), take) + within
        pairs_j.append(j_sorted[src])
        pairs_i.append(g0 + j_sorted[partner])
    pj, pi = np.concatenate(pairs_j), np.concatenate(pairs_i)
    keep = pi < g0 + pj  # a member never pairs with itself (same document in two bands is fine)
    span = np.int64(g0 + len(bands.keys))
    pair = distinct(pj[keep].astype(np.int64) * span + pi[keep])  # one int64 key per pair: fast unique
    return pair // span, pair % span


def rank_order(cand_j: np.ndarray, cand_i: np.ndarray, est: np.ndarray) -> np.ndarray:
    """Order of the candidates: by batch position, then estimate (highest first), then the earliest."""
    return np.lexsort((cand_i, -est, cand_j))


def verify_in_rank_order(cand_j: np.ndarray, cand_i: np.ndarray, est: np.ndarray, threshold: float,
                         max_verify: int, batch_shingles: tuple[np.ndarray, np.ndarray], old_shingles, g0: int
                         ) -> np.ndarray:
    """Exact Jaccard of the candidates (already in rank_order) that are checked, -1 for the rest: per batch
    position, candidates within VERIFY_MARGIN of the threshold in order, at most max_verify, up to the
    first that reaches the threshold. old_shingles(document numbers) -> (hashes, offsets) of earlier ones."""
    score = np.full(len(cand_j), -1.0)
    hopeful = np.flatnonzero(est >= threshold - VERIFY_MARGIN)
    if not len(hopeful):
        return score
    j, i = cand_j[hopeful], cand_i[hopeful]
    first = np.flatnonzero(np.r_[True, j[1:] != j[:-1]])
    rank = np.arange(len(j)) - np.repeat(first, np.diff(np.r_[first, len(j)]))
    live = rank < max_verify
    hopeful, j, i, rank = hopeful[live], j[live], i[live], rank[live]
    hashes, offsets, slot_j, slot_i = _pool(j, i, batch_shingles, old_shingles, g0)
    done = np.zeros(int(j.max()) + 1, bool)  # batch positions that found their match
    for r in range(max_verify):
        now = np.flatnonzero((rank == r) & ~done[j])
        if not len(now):
            break
        jac = pair_jaccard(hashes, offsets, slot_j[now], slot_i[now])
        score[hopeful[now]] = jac
        done[j[now[jac >= threshold]]] = True
    return score


def _pool(j: np.ndarray, i: np.ndarray, batch_shingles: tuple[np.ndarray, np.ndarray], old_shingles, g0: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The shingles of every document the pairs (j, i) name: (hashes, offsets, slot of each j, of each i)."""
    docs = distinct(np.concatenate((g0 + j, i)))
    is_old = docs < g0
    h_old, off_old = old_shingles(docs[is_old]) if is_old.any() else (np.zeros(0, np.uint64), np.zeros(1, np.int64))
    bh, bo = batch_shingles
    new = docs[~is_old] - g0
    lens = np.concatenate((np.diff(off_old), bo[new + 1] - bo[new]))
    offsets = np.zeros(len(docs) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    hashes = np.concatenate((h_old, bh[segment_positions(bo, new)[0]]))
    return hashes, offsets, np.searchsorted(docs, g0 + j), np.searchsorted(docs, i)
