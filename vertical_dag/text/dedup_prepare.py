"""The dedup settings and what deciding needs from a batch's texts alone: canonical hashes, shingles and
MinHash signatures (pure: computed in any process, on any node; the decisions are dedup_index.py's)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from .canonical import canonical_hashes, canonical_texts
from .lsh import BatchBands
from .minhash import MinHasher
from .shingles import shingle_hashes

KEEP, EXACT, NEAR = 0, 1, 2


@dataclass(frozen=True)
class DedupConfig:
    exact: bool = True
    near: bool = True
    ngram_cjk: int = 5
    ngram_words: int = 3
    ngram_chars: int = 0  # > 0: character n-grams of this size for space-separated scripts; 0: word n-grams
    num_perm: int = 128
    bands: int = 20  # recall_bands(0.7, 128)
    rows: int = 5
    threshold: float = 0.7
    verify: bool = True
    max_candidates: int = 32
    max_verify: int = 8  # exact-Jaccard checks per document at most (the highest estimates first)
    seed: int = 1
    family_threshold: float = 0.0  # 0: no families (every document is its own)
    family_bands: int = 0
    family_rows: int = 0

    def fingerprint(self) -> dict:
        return asdict(self)

    def shingle_args(self) -> dict:
        """shingles.shingle_hashes' keyword arguments: the one place that says how documents are shingled."""
        return {"ngram_cjk": self.ngram_cjk, "ngram_words": self.ngram_words, "ngram_chars": self.ngram_chars}


@dataclass
class Prepared:
    """What deciding needs from a batch's texts alone."""

    chash: np.ndarray  # uint64 canonical hashes
    hashes: np.ndarray  # shingle hashes of the whole batch ...
    offsets: np.ndarray  # ... document i's are hashes[offsets[i]:offsets[i+1]]
    sig: np.ndarray  # (n, num_perm) uint32 MinHash signatures
    bands: BatchBands | None  # near-duplicate band keys (None: no near-duplicate search)
    family_bands: BatchBands | None  # template-family band keys (None: no families)


@lru_cache(maxsize=4)
def _hasher(num_perm: int, seed: int) -> MinHasher:
    return MinHasher(num_perm, seed)


def prepare_batch(texts: list[str], config: DedupConfig) -> Prepared:
    """Canonical forms, their hashes, shingles, signatures and band keys of a batch: the costly, parallel part."""
    canon = canonical_texts(texts)
    hashes, offsets = shingle_hashes(canon, **config.shingle_args())
    sig = _hasher(config.num_perm, config.seed).signatures(hashes, offsets)
    family = BatchBands.of(sig, config.family_bands, config.family_rows) if config.family_threshold > 0 else None
    return Prepared(canonical_hashes(canon), hashes, offsets, sig,
                    BatchBands.of(sig, config.bands, config.rows) if config.near else None, family)
