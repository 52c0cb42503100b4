"""The split stage's gate profile: per split file, each document's length and the gate's contamination
measure, written by the stage while it writes the splits, so the gate reads small columns instead of
re-reading and re-hashing every text.

data/splits/.profile/<split>.parquet holds doc_id, n_chars and contamination row by row with
<split>.parquet; profile.json records each split file's size, mtime and rows and the n-gram settings the
measure used. The gate uses the profile only when all of that still matches (a split file rewritten by hand
or params changed since: it measures from the texts instead). The measure itself is the gate's
(quality/contamination.py `measure`); the stage only supplies the n-gram hashes it computed anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..records import read_json, write_json, write_parquet

FOLDER = ".profile"
VERSION = 1


def _stat(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "rows": pq.ParquetFile(path).metadata.num_rows}


def write_profile(out: Path, names: tuple[str, ...], split: np.ndarray, keep: np.ndarray, ids: pa.Array,
                  n_chars: np.ndarray, contamination: list[float] | None, settings: dict[str, Any]) -> None:
    """Per split file (written already) its documents' profile rows, in the file's order."""
    folder = out / FOLDER
    for k, name in enumerate(names):
        rows = np.flatnonzero((split == k) & keep)
        cols = {"doc_id": ids.take(pa.array(rows)), "n_chars": pa.array(n_chars[rows], pa.int64())}
        if contamination is not None:
            cols["contamination"] = pa.array(np.asarray(contamination, np.float64)[rows], pa.float64())
        write_parquet(pa.table(cols), folder / f"{name}.parquet")
    write_json({"version": VERSION, "settings": settings, "contamination": contamination is not None,
                "files": {name: _stat(out / f"{name}.parquet") for name in names}}, folder / "profile.json")


def read_profile(out: Path, files: list[Path], settings: dict[str, Any]) -> dict[str, pa.Table] | None:
    """The profile of each split file, when it still describes `files` under these settings; else None."""
    meta = read_json(out / FOLDER / "profile.json", default=None)
    if not meta or meta.get("version") != VERSION or not meta.get("contamination") or meta.get("settings") != settings:
        return None
    if sorted(meta["files"]) != sorted(p.stem for p in files):
        return None
    tables = {}
    for path in files:
        if meta["files"][path.stem] != _stat(path):
            return None
        tables[path.stem] = pq.read_table(out / FOLDER / f"{path.stem}.parquet")
    return tables
