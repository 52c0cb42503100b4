"""LSH banding over MinHash signatures, and an append-only sorted key index.

`KeyIndex` maps uint64 keys (band keys, exact hashes) to document numbers. It is a list of sorted
segments that merge like a binary counter (a new segment merges into the previous one while that one
is at most twice its size, up to `max_merge` keys), so there are O(log n) segments below that size,
adding n keys costs O(n log n) amortised, and a lookup is a `searchsorted` per segment. Segments persist as .npy files opened memory-mapped, so
an index far larger than RAM is looked up without being loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .shingles import mix64

# ---------------------------------------------------------------- banding


def unique(x: np.ndarray, return_inverse: bool = False):
    """np.unique by sorting: numpy 2's hash-based np.unique measured 10-80x slower on ~1M int64 keys."""
    order = np.argsort(x, kind="stable") if return_inverse else None
    s = x[order] if return_inverse else np.sort(x)
    first = np.ones(len(s), bool)
    first[1:] = s[1:] != s[:-1]
    if not return_inverse:
        return s[first]
    inv = np.empty(len(x), np.int64)
    inv[order] = np.cumsum(first) - 1
    return s[first], inv


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


# ---------------------------------------------------------------- key index


def _merge(k1: np.ndarray, d1: np.ndarray, k2: np.ndarray, d2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge two sorted segments (the second newer) without sorting: each new key goes after the equal
    older keys, so equal keys stay in document order. Needs only the output plus one index per new key."""
    pos = np.searchsorted(k1, k2, side="right") + np.arange(len(k2))
    n = len(k1) + len(k2)
    older = np.ones(n, dtype=bool)
    older[pos] = False
    keys, docs = np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.int64)
    keys[pos], docs[pos] = k2, d2
    keys[older], docs[older] = k1, d1
    return keys, docs


class KeyIndex:
    """uint64 key -> int64 document number, as sorted segments (see module docstring)."""

    def __init__(self, max_merge: int = 1 << 24) -> None:
        self.max_merge = max_merge  # segments stop growing here (16M keys, 256 MB): bounds RAM during merges
        self.segments: list[tuple[np.ndarray, np.ndarray]] = []  # (keys sorted, doc numbers), by age
        self.files: list[str | None] = []  # file stem of each segment on disk, None when not yet saved

    def __len__(self) -> int:
        return sum(len(k) for k, _ in self.segments)

    def add(self, keys: np.ndarray, docs: np.ndarray) -> None:
        keys = np.ascontiguousarray(keys, dtype=np.uint64).ravel()
        docs = np.ascontiguousarray(docs, dtype=np.int64).ravel()
        if len(keys) == 0:
            return
        # documents arrive in increasing order and segments are kept by age, so a stable sort by key
        # leaves equal keys in document order (what lookup's "lowest document numbers" relies on)
        assert len(docs) < 2 or (np.diff(docs) >= 0).all(), "documents must be added in order"
        order = np.argsort(keys, kind="stable")
        self.segments.append((keys[order], docs[order]))
        self.files.append(None)
        while (len(self.segments) >= 2 and len(self.segments[-2][0]) <= 2 * len(self.segments[-1][0])
               and len(self.segments[-2][0]) + len(self.segments[-1][0]) <= self.max_merge):
            (k1, d1), (k2, d2) = self.segments[-2], self.segments[-1]
            self.segments[-2:] = [_merge(k1, d1, k2, d2)]
            self.files[-2:] = [None]

    def lookup(self, keys: np.ndarray, max_hits: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """All (query position, document number) with equal keys, at most the `max_hits` lowest document
        numbers per query key (the same hits whatever the segment layout), by query position then document."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64).ravel()
        # sorted queries walk each segment forwards (measured 13x faster than random probes of a large one)
        by_key = np.argsort(keys, kind="stable")
        sorted_keys = keys[by_key]
        qs, ds = [], []
        for seg_keys, seg_docs in self.segments:
            lo = np.searchsorted(seg_keys, sorted_keys, side="left")
            hi = np.minimum(np.searchsorted(seg_keys, sorted_keys, side="right"), lo + max_hits)
            cnt = hi - lo
            if not cnt.any():
                continue
            q = np.repeat(by_key, cnt)
            starts = np.repeat(lo - np.cumsum(cnt) + cnt, cnt)
            ds.append(np.asarray(seg_docs[starts + np.arange(cnt.sum())]))
            qs.append(q)
        if not qs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        q, d = np.concatenate(qs), np.concatenate(ds)
        order = np.argsort(q * np.int64(d.max() + 1) + d)  # by query position, then document number
        q, d = q[order], d[order]
        if len(qs) > 1:  # keep the max_hits lowest per query across segments
            first = np.searchsorted(q, q, side="left")
            keep = np.arange(len(q)) - first < max_hits
            q, d = q[keep], d[keep]
        return q, d

    # persistence: one keys + one docs .npy per segment, listed in the caller's manifest
    def save(self, folder: Path, prefix: str, counter: list[int]) -> list[str]:
        folder.mkdir(parents=True, exist_ok=True)
        for i, (k, d) in enumerate(self.segments):
            if self.files[i] is None:
                counter[0] += 1
                stem = f"{prefix}-{counter[0]:08d}"
                np.save(folder / f"{stem}.keys.npy", k)
                np.save(folder / f"{stem}.docs.npy", d)
                self.files[i] = stem
        # reopen memory-mapped, so merged segments do not stay in RAM for the rest of the run
        self.segments = [(np.load(folder / f"{s}.keys.npy", mmap_mode="r"), np.load(folder / f"{s}.docs.npy",
                          mmap_mode="r")) for s in self.files]
        return [s for s in self.files if s is not None]

    @classmethod
    def load(cls, folder: Path, stems: list[str]) -> KeyIndex:
        index = cls()
        for stem in stems:
            k = np.load(folder / f"{stem}.keys.npy", mmap_mode="r")
            d = np.load(folder / f"{stem}.docs.npy", mmap_mode="r")
            index.segments.append((k, d))
            index.files.append(stem)
        return index
