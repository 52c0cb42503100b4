"""The persistent, incremental duplicate index and the rule that decides which documents are duplicates.

Documents are numbered in the order they are seen (parts in processing order, rows in part order).
The rule, applied to each document in that order:

1. If its canonical hash equals that of an earlier document, it is an exact duplicate of it.
2. Otherwise its candidates are the earlier documents sharing an LSH band with it (at most `max_candidates`
   earliest per band), ranked by MinHash estimate (highest first; ties: the earliest). With `verify`, the
   first of at most `max_verify` of them whose exact Jaccard of shingle sets reaches `threshold` is its
   match; without, the first whose estimate does. Then it is a near duplicate.
3. Otherwise it is kept and founds a cluster.

A duplicate joins its match's cluster (union-find where the earlier root always wins, stored with full
path compression: each document records its cluster root). So each cluster's root is its earliest
document, the only one kept, and every decision depends only on earlier documents: processing parts
one batch at a time, incrementally across runs, or all at once from scratch gives the same result. Both
caps bound the work per document, so a heavily duplicated corpus stays linear (dedup_candidates.py).

Template families, a looser relation on top (when `family_threshold` > 0): a kept document whose MinHash
estimate against an earlier kept document reaches `family_threshold` (candidates from a second, recall-first
banding of the same signatures) joins that document's family (the most similar; ties: the earliest);
otherwise it founds one. A duplicate is in its cluster root's family. Families never merge: a family is
fixed once its documents are seen, so an old document never changes family, by the same order argument.

What is stored and where: dedup_store.py. Hashing a batch (pure, parallel): dedup_prepare.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .dedup_candidates import candidates, rank_order, verify_in_rank_order
from .dedup_prepare import EXACT, KEEP, NEAR, DedupConfig, Prepared, prepare_batch
from .dedup_store import FetchTexts, IndexStore
from .hash_spill import distinct_inverse
from .minhash import estimated_jaccard

__all__ = ["EXACT", "KEEP", "NEAR", "BatchResult", "DedupConfig", "DedupIndex", "FetchTexts", "Prepared",
           "prepare_batch"]


@dataclass
class BatchResult:
    """Decisions for one batch, aligned with its documents."""

    action: np.ndarray  # KEEP / EXACT / NEAR
    root: np.ndarray  # document number of the cluster root (the kept document)
    match: np.ndarray  # document number of the direct match (-1 when kept)
    est: np.ndarray  # MinHash estimate vs the match (1.0 for exact duplicates, nan when kept)
    verified: np.ndarray  # exact Jaccard vs the match (nan when not computed)
    canonical_hash: np.ndarray  # uint64
    family: np.ndarray  # document number of the template family's founder
    checks: int = 0  # exact-Jaccard checks made (at most max_verify per document)
    root_id: list[str] = field(default_factory=list)
    match_id: list[str] = field(default_factory=list)
    family_id: list[str] = field(default_factory=list)


@dataclass
class _Decisions:
    action: np.ndarray
    match: np.ndarray
    est: np.ndarray
    verified: np.ndarray
    checks: int = 0

    @classmethod
    def empty(cls, n: int) -> _Decisions:
        return cls(np.full(n, KEEP, np.int8), np.full(n, -1, np.int64), np.full(n, np.nan), np.full(n, np.nan))


class DedupIndex(IndexStore):
    def add_batch(self, texts: list[str], doc_ids: list[str], fetch: FetchTexts,
                  prepared: Prepared | None = None) -> BatchResult:
        """Decide a batch against everything seen before, then remember it. `prepared` (prepare_batch of the
        same texts, computed anywhere: a worker process) skips the hashing here."""
        cfg, g0 = self.config, self.num_docs
        prep = prepared if prepared is not None else prepare_batch(texts, cfg)
        n = len(prep.chash)
        d = _Decisions.empty(n)
        is_first = self._exact(prep, d, g0)
        eligible = (d.action == KEEP) & (np.diff(prep.offsets) > 0)
        if cfg.near and eligible.any():
            self._near(prep, eligible, d, g0, fetch)

        # clusters: each duplicate takes its match's root; matches are earlier, so one pass in order
        root = np.arange(g0, g0 + n, dtype=np.int64)
        old = (d.match >= 0) & (d.match < g0)
        if old.any():
            root[old] = self.roots_of(d.match[old])
        for j in np.flatnonzero(d.match >= g0).tolist():  # in-batch matches: already resolved, being earlier
            root[j] = root[d.match[j] - g0]
        kept = (d.action == KEEP) & (np.diff(prep.offsets) > 0)
        family = self._families(prep, kept, root, g0)
        self._remember(prep, doc_ids, d, is_first, kept, root, family, g0)
        return BatchResult(d.action, root, d.match, d.est, d.verified, prep.chash, family, d.checks,
                           self._ids(root, doc_ids, g0), self._ids(d.match, doc_ids, g0), self._ids(family, doc_ids, g0))

    def _exact(self, prep: Prepared, d: _Decisions, g0: int) -> np.ndarray:
        """Exact duplicates: the earliest earlier document with the same canonical hash. Returns which
        documents are the first of their hash in the batch."""
        chash, n = prep.chash, len(prep.chash)
        _, inv, first = distinct_inverse(chash)
        is_first = np.zeros(n, bool)
        is_first[first] = True
        if self.config.exact:
            q, m = self.exact_index.lookup(chash, max_hits=1)
            d.match[q] = m
            in_batch = (d.match < 0) & ~is_first
            d.match[in_batch] = g0 + first[inv[in_batch]]
            d.action[d.match >= 0] = EXACT
            d.est[d.match >= 0] = 1.0
        return is_first

    def _estimates(self, sig: np.ndarray, j: np.ndarray, i: np.ndarray, g0: int) -> np.ndarray:
        """MinHash estimates of the pairs (batch position j, document number i). Earlier documents' signatures
        are read from the store once each (a template is a candidate of many), then every pair is two row
        gathers by integer index (measured 10x faster than boolean masks or np.take), 4k pairs at a time: 2 MB
        temporaries stay in cache and in the allocator (256k at a time spent most of its time faulting in pages)."""
        old = np.flatnonzero(i < g0)
        u, inv, _ = distinct_inverse(i[old])
        rows = sig if not len(u) else np.concatenate((sig, self.signatures_of(u)))
        ri = i - g0
        ri[old] = len(sig) + inv
        out, step = np.empty(len(j)), 1 << 12
        for a in range(0, len(j), step):
            out[a : a + step] = estimated_jaccard(rows[j[a : a + step]], rows[ri[a : a + step]])
        return out

    def _near(self, prep: Prepared, eligible: np.ndarray, d: _Decisions, g0: int, fetch: FetchTexts) -> None:
        """Near duplicates: LSH candidates among earlier documents, checked against the threshold."""
        cfg = self.config
        cand_j, cand_i = candidates(self.bands_index, prep.bands, eligible, g0, cfg.max_candidates)
        if not len(cand_j):
            return
        e = self._estimates(prep.sig, cand_j, cand_i, g0)
        order = rank_order(cand_j, cand_i, e)
        cand_j, cand_i, e = cand_j[order], cand_i[order], e[order]
        if cfg.verify:
            score = verify_in_rank_order(cand_j, cand_i, e, cfg.threshold, cfg.max_verify,
                                         (prep.hashes, prep.offsets), lambda g: self.shingles_of(g, fetch), g0)
            d.checks = int((score >= 0).sum())
        else:
            score = e
        ok = np.flatnonzero(score >= cfg.threshold)
        ok = ok[np.r_[True, cand_j[ok][1:] != cand_j[ok][:-1]]] if len(ok) else ok  # the first per document
        j = cand_j[ok]
        d.action[j], d.match[j], d.est[j] = NEAR, cand_i[ok], e[ok]
        if cfg.verify:
            d.verified[j] = score[ok]

    def _remember(self, prep: Prepared, doc_ids: list[str], d: _Decisions, is_first: np.ndarray, kept: np.ndarray,
                  root: np.ndarray, family: np.ndarray, g0: int) -> None:
        cfg, n = self.config, len(prep.chash)
        nums = np.arange(g0, g0 + n)
        if cfg.exact:
            fresh = is_first & (d.action != EXACT)
            self.exact_index.add(prep.chash[fresh], nums[fresh])
        if cfg.near:
            add = (d.action != EXACT) & (np.diff(prep.offsets) > 0)
            self.bands_index.add_sorted(*prep.bands.sorted_keys(add, nums), prep.bands.bloom)
        if prep.family_bands is not None and kept.any():
            self.family_index.add_sorted(*prep.family_bands.sorted_keys(kept, nums), prep.family_bands.bloom)
        self.append_rows(prep.sig, doc_ids, root, family, prep.hashes, prep.offsets, g0)

    def _ids(self, g: np.ndarray, doc_ids: list[str], g0: int) -> list[str]:
        out = ["" if x < 0 else (doc_ids[x - g0] if x >= g0 else None) for x in g.tolist()]
        old = np.flatnonzero((g >= 0) & (g < g0))
        if len(old):
            for i, s in zip(old.tolist(), self.doc_ids_of(g[old]), strict=True):
                out[i] = s
        return out

    def _families(self, prep: Prepared, kept: np.ndarray, root: np.ndarray, g0: int) -> np.ndarray:
        """Family founder of every batch document (see the module docstring). A pass in document order, as
        candidates are earlier documents."""
        n = len(root)
        family = np.arange(g0, g0 + n, dtype=np.int64)
        if prep.family_bands is not None and kept.any():
            cand_j, cand_i = candidates(self.family_index, prep.family_bands, kept, g0, self.config.max_candidates)
            sim = self._estimates(prep.sig, cand_j, cand_i, g0)
            ok = sim >= self.config.family_threshold
            cand_j, cand_i, sim = cand_j[ok], cand_i[ok], sim[ok]
            order = rank_order(cand_j, cand_i, sim)  # per document: most similar first, then earliest
            cand_j, cand_i = cand_j[order], cand_i[order]
            firsts = np.flatnonzero(np.r_[True, cand_j[1:] != cand_j[:-1]]) if len(cand_j) else np.zeros(0, int)
            best_j, best_i = cand_j[firsts], cand_i[firsts]
            old = best_i < g0
            if old.any():
                family[best_j[old]] = self.families_of(best_i[old])
            for j, i in zip(best_j[~old].tolist(), best_i[~old].tolist(), strict=True):
                family[j] = family[i - g0]  # an earlier batch document: its family is already final
        dup = ~kept & (root != np.arange(g0, g0 + n))
        old_root = dup & (root < g0)
        if old_root.any():
            family[old_root] = self.families_of(root[old_root])
        for j in np.flatnonzero(dup & (root >= g0)).tolist():
            family[j] = family[root[j] - g0]
        return family
