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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

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
    return next((n for n, f in zip(reversed(SPLITS), reversed(fractions), strict=True) if f > 0), SPLITS[0])


def _meta_value(meta: str | None, field: str) -> str | None:
    if not meta:
        return None
    try:
        value = json.loads(meta).get(field)
    except (ValueError, AttributeError):
        return None
    return None if value is None or value == "" else str(value)


def family_ids_of(doc_ids: Sequence[str], cluster_ids: Sequence[str | None],
                  family_ids: Sequence[str | None] | None) -> list[str]:
    """Each document's family: its family id, else its cluster, else itself."""
    families = family_ids or [None] * len(doc_ids)
    return [f or c or d for f, c, d in zip(families, cluster_ids, doc_ids, strict=True)]


def group_keys(doc_ids: Sequence[str], cluster_ids: Sequence[str | None], metas: Sequence[str | None],
               group_by: str, family_ids: Sequence[str | None] | None = None) -> list[str]:
    """The group key of every document: its family or cluster, or the metadata field of its family's
    representative. A missing family falls back to the cluster, a missing cluster to the document."""
    clusters = [c or d for c, d in zip(cluster_ids, doc_ids, strict=True)]
    families = family_ids_of(doc_ids, cluster_ids, family_ids)
    if group_by == "cluster_id":
        return [f"cluster={c}" for c in clusters]
    if group_by == "family_id":
        return [f"family={f}" for f in families]
    rep: dict[str, int] = {}
    for i, (d, f) in enumerate(zip(doc_ids, families, strict=True)):
        j = rep.get(f)
        if j is None or (doc_ids[j] != f and (d == f or d < doc_ids[j])):
            rep[f] = i
    keys = []
    for f in families:
        value = _meta_value(metas[rep[f]], group_by)
        keys.append(f"{group_by}={value}" if value is not None else f"family={f}")
    return keys
