"""MinHash signatures for a whole batch of documents at once, and Jaccard similarity (estimated and exact).

Each of `num_perm` permutations is a universal hash from the multiply-shift family
h_i(x) = ((a_i * x + b_i) mod 2^64) >> 32 with random odd a_i (Dietzfelbinger et al.), which needs no
division, so numpy applies all permutations to a block of shingles as one (num_perm x shingles) array
and takes per-document minima with `np.minimum.reduceat`. Signatures are uint32: 4 bytes per
permutation per document. ((a * x + b) mod 2^32 on 32-bit values is 2x faster but gives other estimates,
enough to move documents between template families: on the contracts of tests/test_boilerplate_corpus.py
34 families became 32 and the validation split came out empty; kept out for that.)
"""

from __future__ import annotations

import numpy as np

EMPTY = np.uint32(0xFFFFFFFF)  # signature value of a document without shingles


class MinHasher:
    def __init__(self, num_perm: int = 128, seed: int = 1, block: int = 1 << 20):
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.a = rng.integers(1, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64)
        # shingles per block so that the (num_perm x shingles) uint64 temporary stays near 8 * block bytes:
        # 8 MB stays in cache and measured 1.6x faster than 32 MB blocks
        self.rows_per_block = max(1, block // num_perm)

    def _permuted(self, x: np.ndarray) -> np.ndarray:
        """(num_perm, len(x)) uint64 values (a * x + b) mod 2^64: permutations along rows, so per-document
        minima run over contiguous memory. The min of these has the min of the top 32 bits as its top
        32 bits, so the shift to uint32 happens after the reduction, on num_perm x documents values only."""
        h = np.multiply(self.a[:, None], x[None, :])
        h += self.b[:, None]
        return h

    def signatures(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """(n_docs, num_perm) uint32 signatures; document i's shingles are hashes[offsets[i]:offsets[i+1]]."""
        n_docs = len(offsets) - 1
        sig = np.full((n_docs, self.num_perm), EMPTY, dtype=np.uint32)
        nonempty = np.flatnonzero(np.diff(offsets) > 0)
        step = self.rows_per_block
        top = np.uint64(32)
        ends = offsets[nonempty + 1]
        i = 0
        while i < len(nonempty):
            # take whole documents while they fit the block; a huge document is split into slices
            lo = offsets[nonempty[i]]
            j = int(np.searchsorted(ends, lo + step, side="right"))
            if j <= i:  # document i alone exceeds the block: running minimum over slices
                d = nonempty[i]
                for s in range(offsets[d], offsets[d + 1], step):
                    block = self._permuted(hashes[s : min(s + step, offsets[d + 1])])
                    np.minimum(sig[d], (block.min(axis=1) >> top).astype(np.uint32), out=sig[d])
                i += 1
                continue
            docs = nonempty[i:j]
            block = self._permuted(hashes[offsets[docs[0]] : offsets[docs[-1] + 1]])
            mins = np.minimum.reduceat(block, offsets[docs] - offsets[docs[0]], axis=1)
            sig[docs] = (mins >> top).astype(np.uint32).T
            i = j
        return sig


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Row-wise fraction of equal signature values (the MinHash estimate of Jaccard)."""
    return np.count_nonzero(sig_a == sig_b, axis=-1) / sig_a.shape[-1]


def exact_jaccard(set_a: np.ndarray, set_b: np.ndarray) -> float:
    """Jaccard of two sorted unique hash arrays."""
    if len(set_a) == 0 and len(set_b) == 0:
        return 1.0
    inter = len(np.intersect1d(set_a, set_b, assume_unique=True))
    return inter / (len(set_a) + len(set_b) - inter)


def segment_positions(offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the elements of documents `docs` (in order), and which entry of `docs` each belongs to."""
    lens = offsets[docs + 1] - offsets[docs]
    owner = np.repeat(np.arange(len(docs)), lens)
    pos = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(offsets[docs], lens)
    return pos, owner


PAIR_BITS = 22  # pairs per round of pair_jaccard at most 2^22; shingles compared on their top 42 bits


def pair_jaccard(hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray,
                 chunk: int = 1 << PAIR_BITS) -> np.ndarray:
    """Jaccard of the shingle sets of documents a[p] and b[p] for every pair p, where document i's shingles
    are hashes[offsets[i]:offsets[i+1]] (a multiset: repeats count once). Vectorised: each shingle becomes
    one uint64 key (pair number in the top PAIR_BITS bits, the shingle's top 42 bits below), so one plain
    sort per side de-duplicates and one sort of both sides finds the shared keys (a 42-bit collision inside
    one pair, ~1e-7 for two 1,000-shingle documents, is the only difference from comparing 64-bit hashes).
    Runs `chunk` shingles at a time (bounded memory)."""
    total = (offsets[a + 1] - offsets[a]) + (offsets[b + 1] - offsets[b])
    inter, union = np.zeros(len(a), np.int64), np.zeros(len(a), np.int64)
    ends = np.cumsum(total)
    shift = np.uint64(64 - PAIR_BITS)
    p0 = 0
    while p0 < len(a):
        p1 = max(p0 + 1, int(np.searchsorted(ends, (ends[p0 - 1] if p0 else 0) + chunk, side="right")))
        p1 = min(p1, p0 + (1 << PAIR_BITS))
        sides = []
        for docs in (a[p0:p1], b[p0:p1]):
            pos, owner = segment_positions(offsets, docs)
            keys = np.sort((owner.astype(np.uint64) << shift) | (hashes[pos] >> np.uint64(PAIR_BITS)))
            sides.append(keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys)
        both = np.sort(np.concatenate(sides))
        shared = both[1:][both[1:] == both[:-1]]  # each side is unique: an equal neighbour is in both
        n = p1 - p0
        inter[p0:p1] = np.bincount((shared >> shift).astype(np.int64), minlength=n)
        union[p0:p1] = np.bincount((both >> shift).astype(np.int64), minlength=n) - inter[p0:p1]
        p0 = p1
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)
