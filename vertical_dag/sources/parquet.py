"""Parquet: one record per row, read in record batches so a large file is never fully in memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .base import FileRejected, ReadOptions, Record, record_from_mapping


def read(path: Path, opts: ReadOptions) -> Iterator[Record]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise FileRejected("invalid_parquet", str(exc)[:300]) from None
    names = pf.schema_arrow.names
    if opts.text_field not in names:
        raise FileRejected("missing_text", f"no column {opts.text_field!r} (columns: {', '.join(names)[:200]})")
    columns = None if opts.meta_fields is None else list(dict.fromkeys([opts.text_field, *(
        [opts.id_field] if opts.id_field in names else []), *(c for c in opts.meta_fields if c in names)]))
    row = 0
    for batch in pf.iter_batches(batch_size=2048, columns=columns):
        for obj in batch.to_pylist():
            row += 1
            yield record_from_mapping(obj, f"row {row}", opts)
