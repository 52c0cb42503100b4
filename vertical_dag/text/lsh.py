"""LSH banding over MinHash signatures (the keys go into key_index.KeyIndex)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .key_index import build_bloom
from .shingles import mix64

# ---------------------------------------------------------------- banding


_XS = np.linspace(0.0, 1.0, 1001)


def _false_rates(threshold: float, b: int, r: int) -> tuple[float, float]:
    xs = _XS
    p = 1.0 - (1.0 - xs**r) ** b
    dx = xs[1] - xs[0]
    below, above = xs < threshold, xs >= threshold
    return float(p[below].sum() * dx), float((1.0 - p[above]).sum() * dx)


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted false positive + negative area
    under the LSH S-curve 1 - (1 - s^rows)^bands around the threshold (as datasketch does). Products below
    num_perm are allowed because exact divisors are too coarse (128 = 16 x 8 or 32 x 4 only); the unused
    permutations still sharpen the similarity estimate. A low fp_weight favours recall, which is right
    when candidates are verified afterwards."""
    best, best_cost = (num_perm, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp, fn = _false_rates(threshold, b, r)
            cost = fp_weight * fp + (1.0 - fp_weight) * fn
            if cost < best_cost - 1e-12:
                best, best_cost = (b, r), cost
    return best


def recall_bands(threshold: float, num_perm: int, min_recall: float = 0.97) -> tuple[int, int]:
    """(bands, rows), bands * rows <= num_perm, that make a pair at exactly `threshold` a candidate with
    probability >= min_recall while admitting the fewest dissimilar pairs (least false positive area).
    For verified candidates: verification removes false positives, only misses are final."""
    best, best_fp = None, float("inf")
    for r in range(1, num_perm + 1):
        for b in range(1, num_perm // r + 1):
            if 1.0 - (1.0 - threshold**r) ** b >= min_recall:
                fp, _ = _false_rates(threshold, b, r)
                if fp < best_fp:
                    best, best_fp = (b, r), fp
                break  # more bands only add false positives
    return best or optimal_bands(threshold, num_perm, fp_weight=0.05)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n_docs, bands) uint64 keys; the band number is mixed in, so keys of all bands share one index."""
    n = sig.shape[0]
    cols = sig[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    h = np.broadcast_to(np.arange(bands, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15), (n, bands)).copy()
    for j in range(rows):
        h = mix64(h ^ cols[:, :, j])
    return h


@dataclass
class BatchBands:
    """A batch's band keys, with what adding them to a KeyIndex or pairing them within the batch needs
    sorted: computed where the signatures are (a worker), so the process deciding in order only filters."""

    keys: np.ndarray  # (n_docs, bands) uint64
    order: np.ndarray  # stable argsort of keys.ravel() (int32 positions: document * bands + band)
    bloom: np.ndarray  # key_index filter of all the keys (a superset of any subset's: still a valid filter)

    @classmethod
    def of(cls, sig: np.ndarray, bands: int, rows: int) -> BatchBands:
        keys = band_keys(sig, bands, rows)
        order = np.argsort(keys.ravel(), kind="stable").astype(np.int32)
        return cls(keys, order, build_bloom(keys.ravel()[order]))

    def order_of(self, docs: np.ndarray) -> np.ndarray:
        """np.argsort(keys[docs].ravel(), kind="stable") for a boolean mask of documents, without sorting:
        a stable order filtered to a subset is the subset's stable order."""
        b = self.keys.shape[1]
        doc = self.order // b
        keep = docs[doc]
        rank = np.cumsum(docs) - 1  # a document's row among the selected ones
        return rank[doc[keep]] * b + self.order[keep] % b

    def sorted_keys(self, docs: np.ndarray, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys, document numbers) of the documents in the mask, sorted by key, equal keys by document."""
        b = self.keys.shape[1]
        pos = self.order[docs[self.order // b]]
        return self.keys.ravel()[pos], numbers[pos // b]
