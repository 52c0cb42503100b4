"""The persistent, incremental duplicate index and the rule that decides which documents are duplicates.

Documents are numbered in the order they are seen (parts in processing order, rows in part order).
The rule, applied to each document in that order:

1. If its canonical hash equals that of an earlier document, it is an exact duplicate of it.
2. Otherwise, if it shares an LSH band with an earlier document (at most `max_candidates` earliest per
   band) whose similarity reaches `threshold` (the exact Jaccard of their shingle sets when `verify`,
   else the MinHash estimate), it is a near duplicate; the most similar such document (ties: the
   earliest) is its match.
3. Otherwise it is kept and founds a cluster.

A duplicate joins its match's cluster (union-find where the earlier root always wins, stored with full
path compression: each document records its cluster root). So each cluster's root is its earliest
document, the only one kept, and every decision depends only on earlier documents: processing parts
one batch at a time, incrementally across runs, or all at once from scratch gives the same result.

Template families, a looser relation on top (when `family_threshold` > 0): a kept document whose MinHash
estimate against an earlier kept document reaches `family_threshold` (candidates from a second, recall-first
banding of the same signatures) joins that document's family (the most similar; ties: the earliest);
otherwise it founds one. A duplicate is in its cluster root's family. Families never merge: a family is
fixed once its documents are seen, so an old document never changes family, by the same order argument.

On disk (`folder/`): manifest.json; per part `sig-<k>.npy` (uint32, one row of num_perm per document),
`docs-<k>.parquet` (doc_id, cluster root number); the band-key and exact-hash `KeyIndex` segments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .canonical import canonical_hashes, canonical_texts
from .lsh import KeyIndex, band_keys
from .minhash import MinHasher, estimated_jaccard, exact_jaccard
from .shingles import shingle_hashes

KEEP, EXACT, NEAR = 0, 1, 2
RECENT_HASHES = 8_000_000  # shingle hashes of recent batches kept for verification (64 MB)
VERIFY_MARGIN = 0.15  # candidates whose estimate is this far below the threshold are not worth verifying

# fetch(part number, rows in that part) -> raw texts, for verifying against documents of earlier batches
FetchTexts = Callable[[int, np.ndarray], list[str]]


@dataclass(frozen=True)
class DedupConfig:
    exact: bool = True
    near: bool = True
    ngram_cjk: int = 5
    ngram_words: int = 3
    num_perm: int = 128
    bands: int = 20  # recall_bands(0.7, 128)
    rows: int = 5
    threshold: float = 0.7
    verify: bool = True
    max_candidates: int = 32
    seed: int = 1
    family_threshold: float = 0.0  # 0: no families (every document is its own)
    family_bands: int = 0
    family_rows: int = 0

    def fingerprint(self) -> dict:
        return asdict(self)


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
    root_id: list[str] = field(default_factory=list)
    match_id: list[str] = field(default_factory=list)
    family_id: list[str] = field(default_factory=list)


@dataclass
class Prepared:
    """What deciding needs from a batch's texts alone (pure: computed in any process, on any node)."""

    chash: np.ndarray  # uint64 canonical hashes
    hashes: np.ndarray  # shingle hashes of the whole batch ...
    offsets: np.ndarray  # ... document i's are hashes[offsets[i]:offsets[i+1]]
    sig: np.ndarray  # (n, num_perm) uint32 MinHash signatures


@lru_cache(maxsize=4)
def _hasher(num_perm: int, seed: int) -> MinHasher:
    return MinHasher(num_perm, seed)


def prepare_batch(texts: list[str], config: DedupConfig) -> Prepared:
    """Canonical forms, their hashes, shingles and signatures of a batch: the costly, parallel part."""
    canon = canonical_texts(texts)
    hashes, offsets = shingle_hashes(canon, config.ngram_cjk, config.ngram_words)
    sig = _hasher(config.num_perm, config.seed).signatures(hashes, offsets)
    return Prepared(canonical_hashes(canon), hashes, offsets, sig)


@dataclass
class _Decisions:
    action: np.ndarray
    match: np.ndarray
    est: np.ndarray
    verified: np.ndarray

    @classmethod
    def empty(cls, n: int) -> _Decisions:
        return cls(np.full(n, KEEP, np.int8), np.full(n, -1, np.int64), np.full(n, np.nan), np.full(n, np.nan))


class DedupIndex:
    def __init__(self, folder: Path, config: DedupConfig):
        self.folder, self.config = Path(folder), config
        self.parts: list[dict] = []  # {name, start, count}
        self.bands_index, self.exact_index, self.family_index = KeyIndex(), KeyIndex(), KeyIndex()
        self.counter = [0]
        self._docs_cache: dict[int, tuple[list[str], np.ndarray, np.ndarray]] = {}
        self._sig_cache: dict[int, np.ndarray] = {}
        self._open: dict | None = None  # the part being written
        self._recent: list[tuple[int, np.ndarray, np.ndarray]] = []  # (g0, hashes, offsets) of recent batches

    # ------------------------------------------------------------ persistence

    @classmethod
    def load(cls, folder: Path, config: DedupConfig) -> DedupIndex:
        index = cls(folder, config)
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
        index.parts, index.counter = manifest["parts"], [manifest["counter"]]
        index.bands_index = KeyIndex.load(index.folder / "bands", manifest["band_segments"])
        index.exact_index = KeyIndex.load(index.folder / "exact", manifest["exact_segments"])
        index.family_index = KeyIndex.load(index.folder / "family", manifest.get("family_segments", []))
        return index

    def save(self) -> None:
        """Write new segments, then the manifest (the commit point), then delete unreferenced segments."""
        bands = self.bands_index.save(self.folder / "bands", "b", self.counter)
        exact = self.exact_index.save(self.folder / "exact", "e", self.counter)
        family = self.family_index.save(self.folder / "family", "f", self.counter)
        manifest = {"config": self.config.fingerprint(), "counter": self.counter[0], "parts": self.parts,
                    "band_segments": bands, "exact_segments": exact, "family_segments": family,
                    "num_docs": self.num_docs}
        tmp = self.folder / ".manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(self.folder / "manifest.json")
        for sub, live in (("bands", bands), ("exact", exact), ("family", family)):
            for f in (self.folder / sub).glob("*.npy"):
                if f.name.split(".")[0] not in live:
                    f.unlink()

    @property
    def num_docs(self) -> int:
        return self.parts[-1]["start"] + self.parts[-1]["count"] if self.parts else 0

    def part_of(self, g: np.ndarray) -> np.ndarray:
        starts = np.array([p["start"] for p in self.parts], dtype=np.int64)
        return np.searchsorted(starts, g, side="right") - 1

    # ------------------------------------------------------------ parts

    def begin_part(self, name: str, n_rows: int) -> None:
        k = len(self.parts)
        self.parts.append({"name": name, "start": self.num_docs, "count": 0, "file": k})
        path = self.folder / f"sig-{k}.npy"
        sig = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint32, shape=(n_rows, self.config.num_perm))
        # the memmap file is sparse: reserve its blocks now, so a full disk is an OSError (ENOSPC) here
        # instead of a SIGBUS when a page is first written
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))
        self._open = {"k": k, "n_rows": n_rows, "sig": sig, "ids": [], "roots": [], "families": []}
        self._sig_cache[k] = sig

    def end_part(self) -> None:
        o, part = self._open, self.parts[-1]
        assert o is not None and part["count"] == o["n_rows"], "part ended before all its rows were seen"
        del o["sig"]  # written back by the OS; readers map the same pages
        table = pa.table({"doc_id": pa.array(o["ids"], pa.string()),
                          "root": pa.array(_joined(o["roots"]), pa.int64()),
                          "family": pa.array(_joined(o["families"]), pa.int64())})
        pq.write_table(table, self.folder / f"docs-{o['k']}.parquet")
        self._open = None
        self._docs_cache.pop(o["k"], None)

    def _docs(self, k: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        if self._open is not None and k == self._open["k"]:
            return self._open["ids"], _joined(self._open["roots"]), _joined(self._open["families"])
        if k not in self._docs_cache:
            if len(self._docs_cache) > 8:
                self._docs_cache.pop(next(iter(self._docs_cache)))
            t = pq.read_table(self.folder / f"docs-{k}.parquet")
            self._docs_cache[k] = (t["doc_id"].to_pylist(), t["root"].to_numpy(), t["family"].to_numpy())
        return self._docs_cache[k]

    def _sig(self, k: int) -> np.ndarray:
        if k not in self._sig_cache:
            self._sig_cache[k] = np.load(self.folder / f"sig-{self.parts[k]['file']}.npy", mmap_mode="r")
        return self._sig_cache[k]

    def doc_info(self, g: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(doc_ids, roots) of earlier documents by number."""
        ids, roots, _ = self._doc_rows(g)
        return ids, roots

    def families_of(self, g: np.ndarray) -> np.ndarray:
        """Family founder numbers of earlier documents by number."""
        return self._doc_rows(g)[2]

    def _doc_rows(self, g: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        ids, roots, fams = [""] * len(g), np.zeros(len(g), np.int64), np.zeros(len(g), np.int64)
        for i, (gi, k) in enumerate(zip(g.tolist(), self.part_of(g).tolist(), strict=True)):
            part_ids, part_roots, part_fams = self._docs(k)
            r = gi - self.parts[k]["start"]
            ids[i], roots[i], fams[i] = part_ids[r], part_roots[r], part_fams[r]
        return ids, roots, fams

    def signatures_of(self, g: np.ndarray) -> np.ndarray:
        out = np.empty((len(g), self.config.num_perm), np.uint32)
        ks = self.part_of(g)
        for k in np.unique(ks):
            sel = ks == k
            out[sel] = self._sig(int(k))[g[sel] - self.parts[k]["start"]]
        return out

    # ------------------------------------------------------------ the rule

    def add_batch(self, texts: list[str], doc_ids: list[str], fetch: FetchTexts,
                  prepared: Prepared | None = None) -> BatchResult:
        """Decide a batch against everything seen before, then remember it. `prepared` (prepare_batch of the
        same texts, computed anywhere: a worker process) skips the hashing here."""
        cfg, g0 = self.config, self.num_docs
        prep = prepared if prepared is not None else prepare_batch(texts, cfg)
        n = len(prep.chash)
        d = _Decisions.empty(n)
        is_first = self._exact(prep, d, g0)
        keys = band_keys(prep.sig, cfg.bands, cfg.rows)
        eligible = (d.action == KEEP) & (np.diff(prep.offsets) > 0)
        if cfg.near and eligible.any():
            self._near(prep, keys, eligible, d, g0, fetch)

        # clusters: each duplicate takes its match's root; matches are earlier, so one pass in order
        root = np.arange(g0, g0 + n, dtype=np.int64)
        old = (d.match >= 0) & (d.match < g0)
        if old.any():
            root[old] = self.doc_info(d.match[old])[1]
        for j in np.flatnonzero(d.match >= g0):  # in-batch matches: already resolved, being earlier
            root[j] = root[d.match[j] - g0]
        kept = (d.action == KEEP) & (np.diff(prep.offsets) > 0)
        family, fkeys = self._families(prep.sig, kept, root, g0)
        self._remember(prep, doc_ids, d, is_first, keys, kept, root, family, fkeys, g0)
        return BatchResult(d.action, root, d.match, d.est, d.verified, prep.chash, family, self._ids(root, doc_ids, g0),
                           self._ids(d.match, doc_ids, g0), self._ids(family, doc_ids, g0))

    def _exact(self, prep: Prepared, d: _Decisions, g0: int) -> np.ndarray:
        """Exact duplicates: the earliest earlier document with the same canonical hash. Returns which
        documents are the first of their hash in the batch."""
        chash, n = prep.chash, len(prep.chash)
        _, first = np.unique(chash, return_index=True)
        is_first = np.zeros(n, bool)
        is_first[first] = True
        if self.config.exact:
            q, m = self.exact_index.lookup(chash, max_hits=1)
            d.match[q] = m
            inv = np.unique(chash, return_inverse=True)[1]
            in_batch = (d.match < 0) & ~is_first
            d.match[in_batch] = g0 + first[inv[in_batch]]
            d.action[d.match >= 0] = EXACT
            d.est[d.match >= 0] = 1.0
        return is_first

    def _near(self, prep: Prepared, keys: np.ndarray, eligible: np.ndarray, d: _Decisions, g0: int,
              fetch: FetchTexts) -> None:
        """Near duplicates: LSH candidates among earlier documents, checked against the threshold."""
        cfg, sig, n = self.config, prep.sig, len(prep.chash)
        cand_j, cand_i = self._candidates(self.bands_index, keys, eligible, g0)
        if not len(cand_j):
            return
        sig_i = np.where((cand_i >= g0)[:, None], sig[np.clip(cand_i - g0, 0, n - 1)], 0)
        old = cand_i < g0
        if old.any():
            sig_i[old] = self.signatures_of(cand_i[old])
        e = estimated_jaccard(sig[cand_j], sig_i)
        score = self._verify(cand_j, cand_i, e, prep.hashes, prep.offsets, g0, fetch) if cfg.verify else e.copy()
        ok = score >= cfg.threshold
        cand_j, cand_i, e, score = cand_j[ok], cand_i[ok], e[ok], score[ok]
        order = np.lexsort((cand_i, -score, cand_j))  # best match per document: highest score, then earliest
        cand_j, cand_i, e, score = cand_j[order], cand_i[order], e[order], score[order]
        firsts = np.flatnonzero(np.r_[True, cand_j[1:] != cand_j[:-1]]) if len(cand_j) else []
        self._assign_near(cand_j, cand_i, e, score, firsts, d.action, d.match, d.est, d.verified, g0)

    def _remember(self, prep: Prepared, doc_ids: list[str], d: _Decisions, is_first: np.ndarray, keys: np.ndarray,
                  kept: np.ndarray, root: np.ndarray, family: np.ndarray, fkeys: np.ndarray | None, g0: int) -> None:
        cfg, n = self.config, len(prep.chash)
        nums = np.arange(g0, g0 + n)
        if cfg.exact:
            fresh = is_first & (d.action != EXACT)
            self.exact_index.add(prep.chash[fresh], nums[fresh])
        if cfg.near:
            add = (d.action != EXACT) & (np.diff(prep.offsets) > 0)
            self.bands_index.add(keys[add], np.repeat(nums[add], cfg.bands))
        if fkeys is not None:
            self.family_index.add(fkeys[kept], np.repeat(nums[kept], cfg.family_bands))
        o = self._open
        assert o is not None, "begin_part() first"
        row0 = self.parts[-1]["count"]
        o["sig"][row0 : row0 + n] = prep.sig
        o["ids"].extend(doc_ids)
        o["roots"].append(root)
        o["families"].append(family)
        self.parts[-1]["count"] += n
        # shingles of the latest batches, so verifying against them needs no re-reading (bounded: 8M hashes)
        self._recent.append((g0, prep.hashes, prep.offsets))
        while len(self._recent) > 1 and sum(len(h) for _, h, _ in self._recent) > RECENT_HASHES:
            self._recent.pop(0)

    def _ids(self, g: np.ndarray, doc_ids: list[str], g0: int) -> list[str]:
        out = ["" if x < 0 else (doc_ids[x - g0] if x >= g0 else None) for x in g.tolist()]
        old = np.flatnonzero((g >= 0) & (g < g0))
        if len(old):
            for i, s in zip(old.tolist(), self.doc_info(g[old])[0], strict=True):
                out[i] = s
        return out

    def _families(self, sig: np.ndarray, kept: np.ndarray, root: np.ndarray, g0: int
                  ) -> tuple[np.ndarray, np.ndarray | None]:
        """Family founder of every batch document (see the module docstring) and the kept ones' family band
        keys (None when families are off). A pass in document order, as candidates are earlier documents."""
        cfg, n = self.config, len(root)
        family = np.arange(g0, g0 + n, dtype=np.int64)
        fkeys = None
        if cfg.family_threshold > 0 and kept.any():
            fkeys = band_keys(sig, cfg.family_bands, cfg.family_rows)
            cand_j, cand_i = self._candidates(self.family_index, fkeys, kept, g0)
            sim = np.empty(len(cand_j))
            for a in range(0, len(cand_j), 1 << 18):  # bounded memory: 256k pairs of signatures at a time
                j, i = cand_j[a : a + (1 << 18)], cand_i[a : a + (1 << 18)]
                sig_i = sig[np.clip(i - g0, 0, n - 1)]
                if (i < g0).any():
                    sig_i[i < g0] = self.signatures_of(i[i < g0])
                sim[a : a + len(j)] = estimated_jaccard(sig[j], sig_i)
            ok = sim >= cfg.family_threshold
            cand_j, cand_i, sim = cand_j[ok], cand_i[ok], sim[ok]
            order = np.lexsort((cand_i, -sim, cand_j))  # per document: most similar first, then earliest
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
        return family, fkeys

    def _candidates(self, index: KeyIndex, keys: np.ndarray, eligible: np.ndarray, g0: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(batch position j, earlier document number i) pairs sharing a band of `index`, at most
        max_candidates of the earliest documents per (j, band), whether those are in earlier batches or
        this one (eligible ones)."""
        cfg, b = self.config, keys.shape[1]
        js = np.flatnonzero(eligible)
        flat = keys[js].ravel()
        q_j = np.repeat(js, b)
        q, d = index.lookup(flat, cfg.max_candidates)
        old_count = np.bincount(q, minlength=len(flat))
        pairs_j, pairs_i = [q_j[q]], [d]
        # in-batch: sort (key, position); each member pairs with the earliest members before it
        order = np.argsort(flat, kind="stable")  # q_j is already non-decreasing
        k_sorted, j_sorted = flat[order], q_j[order]
        group_start = np.flatnonzero(np.r_[True, k_sorted[1:] != k_sorted[:-1]])
        sizes = np.diff(np.r_[group_start, len(flat)])
        rank = np.arange(len(flat)) - np.repeat(group_start, sizes)
        take = np.maximum(0, np.minimum(rank, cfg.max_candidates - old_count[order]))
        if take.any():
            src = np.repeat(np.arange(len(flat)), take)
            within = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
            partner = np.repeat(np.repeat(group_start, sizes), take) + within
            pairs_j.append(j_sorted[src])
            pairs_i.append(g0 + j_sorted[partner])
        pj, pi = np.concatenate(pairs_j), np.concatenate(pairs_i)
        keep = pi < g0 + pj  # a member never pairs with itself (same document in two bands is fine)
        span = np.int64(g0 + len(keys))
        pair = np.unique(pj[keep].astype(np.int64) * span + pi[keep])  # one int64 key per pair: fast unique
        return pair // span, pair % span

    def _verify(self, cand_j, cand_i, e, hashes, offsets, g0, fetch) -> np.ndarray:
        """Exact Jaccard for candidates whose estimate is close enough to the threshold (-1 for the rest)."""
        cfg = self.config
        score = np.full(len(cand_j), -1.0)
        todo = np.flatnonzero(e >= cfg.threshold - VERIFY_MARGIN)
        sets: dict[int, np.ndarray] = {}

        def batch_set(j: int) -> np.ndarray:
            if g0 + j not in sets:
                sets[g0 + j] = np.unique(hashes[offsets[j] : offsets[j + 1]])
            return sets[g0 + j]

        old = np.unique(cand_i[todo][cand_i[todo] < g0])
        for r0, rh, ro in self._recent:  # documents of recent batches: shingles still in memory
            hit = old[(old >= r0) & (old < r0 + len(ro) - 1)]
            for g in hit.tolist():
                sets[g] = np.unique(rh[ro[g - r0] : ro[g - r0 + 1]])
            old = np.setdiff1d(old, hit, assume_unique=True)
        if len(old):
            ks = self.part_of(old)
            for k in np.unique(ks):
                rows = old[ks == k] - self.parts[k]["start"]
                texts = fetch(int(k), rows)
                canon = canonical_texts(texts)
                h, off = shingle_hashes(canon, cfg.ngram_cjk, cfg.ngram_words)
                for g, a, z in zip(old[ks == k].tolist(), off[:-1].tolist(), off[1:].tolist(), strict=True):
                    sets[g] = np.unique(h[a:z])
        for t in todo.tolist():
            j, i = int(cand_j[t]), int(cand_i[t])
            set_i = sets[i] if i < g0 else batch_set(i - g0)
            score[t] = exact_jaccard(batch_set(j), set_i)
        return score

    def _assign_near(self, cand_j, cand_i, e, score, firsts, action, match, est, verified, g0) -> None:
        for f in np.asarray(firsts, dtype=np.int64).tolist():
            j = int(cand_j[f])
            action[j], match[j], est[j] = NEAR, cand_i[f], e[f]
            if self.config.verify:
                verified[j] = score[f]


def _joined(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
