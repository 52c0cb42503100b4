"""The gate profile of a part stage (ingest, dedup, normalize): per part, what its gate needs from each document's
text, measured while the part is written (by the worker that writes it; for dedup, by the worker that hashes
its texts), so the gate reads small columns instead of re-reading every text.

<out>/profile/<part>.parquet holds, row by row with <out>/parts/<part>.parquet, doc_id and n_chars and, for
normalize, pii_found (the PII kinds the gate's own detector, profile.pii_detector, finds in the text as
written). Its Parquet metadata names the part it describes (its size and a hash of its Parquet footer, which
holds every column chunk's row count, compressed size and statistics) and the measures' settings; the gate
uses a sidecar only while both still match and measures that part from its texts otherwise (a part
rewritten by hand, a run killed between a part and its sidecar, changed PII params). Everything in a
sidecar follows from the part's bytes and the params, so it is the same for 1 worker, N workers or Ray.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..records import read_many, write_parquet
from .file_memo import cached

FOLDER = "profile"
VERSION = 1
_META = b"vertical_dag.part_profile"

Detect = Callable[..., dict[int, list[str]]]  # texts (and as an Arrow array) -> PII kinds by index, where any


def sidecar_path(out: Path, part: Path) -> Path:
    """<out>/profile/<name>.parquet for the part <out>/parts/<name>.parquet."""
    return out / FOLDER / part.relative_to(out / "parts")


def settings(pii: dict[str, Any] | None) -> dict[str, Any]:
    """What a sidecar's measures depend on besides the part: the PII detector's settings (None: no PII measure)."""
    return {"pii": pii}


def part_signature(path: Path) -> dict[str, Any]:
    """The part's size and a hash of its footer: reading a few KB tells whether the part is the one measured."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - 8))
        n = int.from_bytes(f.read(4), "little")
        f.seek(max(0, size - 8 - n))
        footer = f.read(n)
    return {"bytes": size, "footer": hashlib.blake2b(footer, digest_size=16).hexdigest()}


def lengths(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """n_chars of each text (0 for a null one), as the profile holds it."""
    return pc.cast(pc.fill_null(pc.utf8_length(texts), 0), pa.int64()) if len(texts) else pa.array([], pa.int64())


def measure(doc_ids: pa.Array | pa.ChunkedArray, texts: pa.Array | pa.ChunkedArray, detect: Detect | None = None,
            values: list[str | None] | None = None, copy: dict[str, Any] | None = None) -> pa.Table:
    """Profile rows of some documents: doc_id, n_chars (0 for a null text), the `copy` columns as they are
    (small columns of the part the gate reads, e.g. lang, so it need not open the part) and, with a detector,
    pii_found (the comma-joined PII kinds in the text, null when none or no text). values: the texts as
    Python strings when the caller has them already (else they are taken from `texts`)."""
    n = len(doc_ids)
    cols: dict[str, Any] = {
        "doc_id": pc.cast(doc_ids, pa.string()),
        "n_chars": lengths(texts),
        **(copy or {}),
    }
    if detect is not None:
        pii: list[str | None] = [None] * n
        for i, kinds in (detect(texts.to_pylist() if values is None else values, texts) if n else {}).items():
            pii[i] = ",".join(kinds)
        cols["pii_found"] = pa.array(pii, pa.string())
    return pa.table(cols)


def concat(tables: list[pa.Table], empty: pa.Table) -> pa.Table:
    """One part's profile from its batches' (one chunk, so its bytes do not depend on how it was cut);
    `empty` when it has none."""
    return pa.concat_tables(tables).combine_chunks() if tables else empty


def write_sidecar(path: Path, rows: pa.Table, part: Path, settings: dict[str, Any]) -> None:
    """The profile of `part` (written already), stamped with the part's signature and the settings."""
    meta = {"version": VERSION, "settings": settings, "part": part_signature(part)}
    write_parquet(rows.replace_schema_metadata({_META: json.dumps(meta, sort_keys=True)}), path)


def read_sidecar(out: Path, part: Path, settings: dict[str, Any]) -> pa.Table | None:
    """The sidecar of `part` if it still describes that part under these settings; else None."""
    try:
        f = pq.ParquetFile(sidecar_path(out, part))
        meta = json.loads((f.schema_arrow.metadata or {}).get(_META, b"null"))
        if not isinstance(meta, dict) or meta.get("version") != VERSION or meta.get("settings") != settings:
            return None
        if meta.get("part") != part_signature(part):
            return None
        return f.read().replace_schema_metadata(None)
    except (OSError, ValueError, pa.ArrowException):  # missing, unreadable: measured from the texts instead
        return None


def read_sidecars(out: Path, parts: list[Path], settings: dict[str, Any]) -> dict[Path, pa.Table]:
    """The sidecars that still describe their parts, by part path (the others are left out)."""
    parts = [p for p in parts if p.is_relative_to(out / "parts")]
    kind = ("sidecar", json.dumps(settings, sort_keys=True))
    found = read_many(lambda part: cached(kind, lambda: read_sidecar(out, part, settings), sidecar_path(out, part), part),
                      parts)
    return {part: t for part, t in zip(parts, found, strict=True) if t is not None}
