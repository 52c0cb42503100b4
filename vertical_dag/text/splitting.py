"""Stable, leak-free split assignment: a hash of the group key decides, nothing else.

u = blake2b(seed, group key) read as a number in [0, 1); the split is the first whose cumulative fraction
exceeds u. A document's split depends only on its own group key, so adding documents never moves an old one,
and every document of a group lands in one split. Groups, from `group_by`:

- `family_id` (the default): a template family (documents related above dedup.family_threshold, founded by
  its first document), so variants of one form never straddle train and test; a new document joining a
  family whose members are in train goes to train;
- `cluster_id`: a near-duplicate cluster only;
- a metadata field (e.g. law_name): the key of a whole family is taken from one representative document
  (its founder, whose doc_id is the family id, when present, else the smallest doc_id), so a family never
  straddles two groups and hence never two splits.

The column functions (`*_column`) take and return Arrow arrays, so a corpus of millions of documents is keyed
without a Python string per document; the list functions are the same on lists.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SPLITS = ("train", "validation", "test")


def unit_hash(seed: int, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign(seed: int, key: str, fractions: Sequence[float]) -> str:
    u = unit_hash(seed, key)
    acc = 0.0
    for name, frac in zip(SPLITS, fractions, strict=True):
        acc += frac
        if u < acc:
            return name
    return SPLITS[_fallback(fractions)]


@dataclass(frozen=True)
class _UnitHashes:
    """unit_hash of every key of a chunk, as float64 (blake2b of seed and key read big-endian, over 2**64)."""

    seed: int

    def __call__(self, keys: pa.Array) -> np.ndarray:
        prefix, blake2b = f"{self.seed}\x00".encode(), hashlib.blake2b
        digests = b"".join([blake2b(prefix + k.encode(), digest_size=8).digest() for k in keys.to_pylist()])
        return np.frombuffer(digests, ">u8").astype(np.float64) / 2**64


HASH_CHUNK = 1 << 18  # keys per task of assign_column's map


def assign_column(seed: int, keys: pa.Array | pa.ChunkedArray, fractions: Sequence[float],
                  map_fn: Callable[..., Iterable[np.ndarray]] = map) -> np.ndarray:
    """The split of every key as an index into SPLITS (int8), hashing each distinct key once: the same as
    `assign` (the digests read as big-endian integers, divided by 2**64, against the same running sums).
    map_fn: how the chunks of distinct keys are hashed, in order (an executor's map: 2.6M keys took 3.4 s
    on one core)."""
    if not len(keys):
        return np.zeros(0, np.int8)
    encoded = pc.dictionary_encode(keys).combine_chunks() if isinstance(keys, pa.ChunkedArray) else pc.dictionary_encode(keys)
    distinct_keys = encoded.dictionary
    # each chunk copied out of the dictionary: a pickled slice would carry the whole dictionary's buffers
    chunks = [pa.concat_arrays([distinct_keys.slice(a, HASH_CHUNK)]) for a in range(0, len(distinct_keys), HASH_CHUNK)]
    u = np.concatenate([np.zeros(0), *map_fn(_UnitHashes(seed), chunks)])
    bounds, acc = [], 0.0
    for frac in fractions:
        acc += frac
        bounds.append(acc)
    codes = np.searchsorted(np.array(bounds), u, side="right")  # the first split whose running sum exceeds u
    codes[codes == len(SPLITS)] = _fallback(fractions)
    return codes.astype(np.int8)[encoded.indices.to_numpy(zero_copy_only=False)]


def distinct_count(values: pa.Array | pa.ChunkedArray) -> int:
    """How many distinct values (a null counts as none): a dictionary encoding's size, measured 4x faster
    than pc.count_distinct on 2.6M string keys."""
    encoded = pc.dictionary_encode(pc.drop_null(values))
    return len(encoded.dictionary if isinstance(encoded, pa.DictionaryArray) else encoded.combine_chunks().dictionary)


def _fallback(fractions: Sequence[float]) -> int:
    """assign's split for a u past every running sum (fractions summing to a little under 1)."""
    return next((k for k in reversed(range(len(SPLITS))) if fractions[k] > 0), 0)


def _meta_value(meta: str | None, field: str) -> str | None:
    if not meta:
        return None
    try:
        value = json.loads(meta).get(field)
    except (ValueError, AttributeError):
        return None
    return None if value is None or value == "" else str(value)


def _present(a: pa.Array | pa.ChunkedArray | None, n: int) -> pa.Array:
    """The column with empty strings as nulls (a missing column: all null)."""
    if a is None:
        return pa.nulls(n, pa.string())
    a = pc.cast(a, pa.string())
    return pc.if_else(pc.equal(a, ""), pa.scalar(None, pa.string()), a)


def family_column(doc_ids: pa.Array | pa.ChunkedArray, cluster_ids: pa.Array | None,
                  family_ids: pa.Array | None) -> pa.Array:
    """Each document's family: its family id, else its cluster, else itself."""
    n = len(doc_ids)
    return pc.coalesce(_present(family_ids, n), _present(cluster_ids, n), pc.cast(doc_ids, pa.string()))


def group_key_column(doc_ids: pa.Array | pa.ChunkedArray, cluster_ids: pa.Array | None, metas: pa.Array | None,
                     group_by: str, family_ids: pa.Array | None = None) -> pa.Array:
    """The group key of every document: its family or cluster, or the metadata field of its family's
    representative. A missing family falls back to the cluster, a missing cluster to the document."""
    n = len(doc_ids)
    if group_by == "cluster_id":
        clusters = pc.coalesce(_present(cluster_ids, n), pc.cast(doc_ids, pa.string()))
        return pc.binary_join_element_wise("cluster=", clusters, "")
    families = family_column(doc_ids, cluster_ids, family_ids)
    if group_by == "family_id":
        return pc.binary_join_element_wise("family=", families, "")
    ids, fams = pc.cast(doc_ids, pa.string()).to_pylist(), families.to_pylist()
    meta_list = metas.to_pylist() if metas is not None else [None] * n
    rep: dict[str, int] = {}
    for i, (d, f) in enumerate(zip(ids, fams, strict=True)):
        j = rep.get(f)
        if j is None or (ids[j] != f and (d == f or d < ids[j])):
            rep[f] = i
    keys = []
    for f in fams:
        value = _meta_value(meta_list[rep[f]], group_by)
        keys.append(f"{group_by}={value}" if value is not None else f"family={f}")
    return pa.array(keys, pa.string())


def _arr(values: Sequence[str | None] | None) -> pa.Array | None:
    return None if values is None else pa.array(list(values), pa.string())


def family_ids_of(doc_ids: Sequence[str], cluster_ids: Sequence[str | None],
                  family_ids: Sequence[str | None] | None) -> list[str]:
    """family_column on lists."""
    return family_column(_arr(doc_ids), _arr(cluster_ids), _arr(family_ids)).to_pylist()


def group_keys(doc_ids: Sequence[str], cluster_ids: Sequence[str | None], metas: Sequence[str | None],
               group_by: str, family_ids: Sequence[str | None] | None = None) -> list[str]:
    """group_key_column on lists."""
    return group_key_column(_arr(doc_ids), _arr(cluster_ids), _arr(metas), group_by, _arr(family_ids)).to_pylist()
