"""Where the duplicate index keeps what it has seen: parts, per-document rows, signatures, the key indexes.

On disk (`folder/`): manifest.json (the commit point); per part `sig-<k>.npy` (uint32, one row of num_perm
per document) and `docs-<k>.parquet` (doc_id, cluster root number, family founder number); the band-key,
exact-hash and family `KeyIndex` segments. Documents are numbered in the order they are seen; a document
number maps to (part, row) by the parts' start numbers. The shingles of the latest batches stay in memory
(`RECENT_HASHES`), so verifying against them re-reads nothing.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .canonical import canonical_texts
from .hash_spill import distinct
from .key_index import KeyIndex, mapped, npy_offset
from .minhash import segment_positions
from .shingles import shingle_hashes

RECENT_HASHES = 8_000_000  # shingle hashes of recent batches kept for verification (64 MB)
FETCHED_HASHES = 8_000_000  # shingle hashes of re-read earlier documents kept, least recently used out (64 MB)

# fetch(part number, rows in that part) -> raw texts, for verifying against documents of earlier batches
FetchTexts = Callable[[int, np.ndarray], list[str]]


class IndexStore:
    """Persistence and per-document lookups of the index; the decision rule lives in dedup_index.DedupIndex."""

    def __init__(self, folder: Path, config, background: bool = False) -> None:
        """background: merge the key indexes on a thread (for a run that has more than one core to use)."""
        self.folder, self.config = Path(folder), config
        self.parts: list[dict] = []  # {name, start, count, file}
        # background: merged on a thread while this process decides the next batch (layout only changes)
        self.bands_index, self.exact_index, self.family_index = (KeyIndex(background=background) for _ in range(3))
        self.counter = [0]
        self._docs_cache: dict[int, tuple[list[str], np.ndarray, np.ndarray]] = {}
        self._open: dict | None = None  # the part being written
        self._sig_offset: dict[int, int] = {}  # where each closed part's signatures start in its file
        self._recent: list[tuple[int, np.ndarray, np.ndarray]] = []  # (g0, hashes, offsets) of recent batches
        # earlier documents re-read for verification: in a heavily duplicated corpus the same ones (a popular
        # text's first copies) are candidates again and again. Only speed depends on what is cached.
        self._fetched: OrderedDict[int, np.ndarray] = OrderedDict()
        self._fetched_size = 0

    # ------------------------------------------------------------ persistence

    @classmethod
    def load(cls, folder: Path, config, background: bool = False):
        index = cls(folder, config, background)
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
        index.parts, index.counter = manifest["parts"], [manifest["counter"]]
        index.bands_index = KeyIndex.load(index.folder / "bands", manifest["band_segments"], background)
        index.exact_index = KeyIndex.load(index.folder / "exact", manifest["exact_segments"], background)
        index.family_index = KeyIndex.load(index.folder / "family", manifest.get("family_segments", []), background)
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
        tmp.write_text(json.dumps(manifest))  # no indent: C encoder (rewritten every part)
        tmp.replace(self.folder / "manifest.json")
        for sub, index, live in (("bands", self.bands_index, bands), ("exact", self.exact_index, exact),
                                 ("family", self.family_index, family)):
            index.remove_unlisted(self.folder / sub, live)

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

    def append_rows(self, sig: np.ndarray, doc_ids: list[str], root: np.ndarray, family: np.ndarray,
                    hashes: np.ndarray, offsets: np.ndarray, g0: int) -> None:
        """Record a decided batch in the open part, and keep its shingles among the recent ones."""
        o, n = self._open, len(root)
        assert o is not None, "begin_part() first"
        row0 = self.parts[-1]["count"]
        o["sig"][row0 : row0 + n] = sig
        o["ids"].extend(doc_ids)
        o["roots"].append(root)
        o["families"].append(family)
        self.parts[-1]["count"] += n
        self._recent.append((g0, hashes, offsets))
        while len(self._recent) > 1 and sum(len(h) for _, h, _ in self._recent) > RECENT_HASHES:
            self._recent.pop(0)

    def _docs(self, k: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        if self._open is not None and k == self._open["k"]:
            o = self._open
            # joined once per batch, not once per lookup (a lookup per document made this quadratic)
            o["roots"], o["families"] = [_joined(o["roots"])], [_joined(o["families"])]
            return o["ids"], o["roots"][0], o["families"][0]
        if k not in self._docs_cache:
            if len(self._docs_cache) > 8:
                self._docs_cache.pop(next(iter(self._docs_cache)))
            t = pq.read_table(self.folder / f"docs-{k}.parquet")
            self._docs_cache[k] = (t["doc_id"].to_pylist(), t["root"].to_numpy(), t["family"].to_numpy())
        return self._docs_cache[k]

    def _sig(self, k: int) -> np.ndarray:
        if self._open is not None and k == self._open["k"]:
            return self._open["sig"]
        # mapped for one lookup only: kept mappings held every signature page read so far (1.3 GB at 100x)
        path = self.folder / f"sig-{self.parts[k]['file']}.npy"
        if k not in self._sig_offset:
            self._sig_offset[k] = npy_offset(path)
        return mapped(path, self._sig_offset[k], np.uint32, (self.parts[k]["count"], self.config.num_perm))

    # ------------------------------------------------------------ earlier documents by number

    def doc_ids_of(self, g: np.ndarray) -> list[str]:
        out: list[str] = [""] * len(g)
        for k, sel, rows in self._by_part(g):
            ids = self._docs(k)[0]
            for i, r in zip(sel.tolist(), rows.tolist(), strict=True):
                out[i] = ids[r]
        return out

    def roots_of(self, g: np.ndarray) -> np.ndarray:
        return self._column(g, 1)

    def families_of(self, g: np.ndarray) -> np.ndarray:
        """Family founder numbers of earlier documents by number."""
        return self._column(g, 2)

    def doc_info(self, g: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(doc_ids, roots) of earlier documents by number."""
        return self.doc_ids_of(g), self.roots_of(g)

    def _column(self, g: np.ndarray, c: int) -> np.ndarray:
        out = np.zeros(len(g), np.int64)
        for k, sel, rows in self._by_part(g):
            out[sel] = self._docs(k)[c][rows]
        return out

    def _by_part(self, g: np.ndarray):
        """(part, positions in g, rows in that part) for each part that the document numbers g touch."""
        g = np.asarray(g, np.int64)
        ks = self.part_of(g)
        for k in distinct(ks).tolist():
            sel = np.flatnonzero(ks == k)
            yield k, sel, g[sel] - self.parts[k]["start"]

    def signatures_of(self, g: np.ndarray) -> np.ndarray:
        out = np.empty((len(g), self.config.num_perm), np.uint32)
        for k, sel, rows in self._by_part(g):
            out[sel] = np.asarray(self._sig(k))[rows]  # a plain view: np.memmap's indexing is slower
        return out

    def _remember_fetched(self, g: np.ndarray, hashes: np.ndarray, offsets: np.ndarray) -> None:
        for x, a, z in zip(g.tolist(), offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
            self._fetched[x] = hashes[a:z].copy()  # a copy: a view would keep the whole fetched batch alive
            self._fetched_size += z - a
        while self._fetched_size > FETCHED_HASHES and len(self._fetched) > 1:
            self._fetched_size -= len(self._fetched.popitem(last=False)[1])

    def shingles_of(self, g: np.ndarray, fetch: FetchTexts) -> tuple[np.ndarray, np.ndarray]:
        """(hashes, offsets) of the shingles of earlier documents g (in that order): from the recent batches
        or the re-read ones when still in memory, else re-shingled from their texts (fetch)."""
        pieces = []  # (positions in g, hashes, offsets, those documents' numbers within hashes/offsets)
        todo = np.ones(len(g), bool)
        for r0, rh, ro in self._recent:
            sel = np.flatnonzero(todo & (g >= r0) & (g < r0 + len(ro) - 1))
            if len(sel):
                pieces.append((sel, rh, ro, g[sel] - r0))
                todo[sel] = False
        cached = [x for x in np.flatnonzero(todo).tolist() if int(g[x]) in self._fetched]
        if cached:
            arrays = [self._fetched[int(g[x])] for x in cached]
            for x in cached:
                self._fetched.move_to_end(int(g[x]))
            off = np.zeros(len(arrays) + 1, np.int64)
            np.cumsum([len(a) for a in arrays], out=off[1:])
            pieces.append((np.array(cached), np.concatenate(arrays), off, np.arange(len(arrays))))
            todo[cached] = False
        left = np.flatnonzero(todo)
        for k, sel, rows in self._by_part(g[left]):
            h, off = shingle_hashes(canonical_texts(fetch(k, rows)), **self.config.shingle_args())
            pieces.append((left[sel], h, off, np.arange(len(rows))))
            self._remember_fetched(g[left[sel]], h, off)
        lens = np.zeros(len(g), np.int64)
        for sel, _, off, local in pieces:
            lens[sel] = off[local + 1] - off[local]
        offsets = np.zeros(len(g) + 1, np.int64)
        np.cumsum(lens, out=offsets[1:])
        hashes = np.empty(offsets[-1], np.uint64)
        for sel, h, off, local in pieces:
            hashes[segment_positions(offsets, sel)[0]] = h[segment_positions(off, local)[0]]
        return hashes, offsets


def _joined(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
