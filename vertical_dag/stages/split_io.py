"""Reading the normalize stage's parts batch by batch for the split stage, and writing the three splits.

The parts' schemas are unified once (a column missing from an older part reads as nulls, as
pyarrow.concat_tables(promote_options="default") would); a batch is addressed by the global index of its
first document, so small per-document columns (numpy) line up with the texts streaming past.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..records import QueuedWriter, atomic_path, empty_docs, list_parts, read_many
from ..text.decontaminate import HashedBatch, TextMapper, hash_batch
from ..text.ngrams import NgramSpec

BATCH = 8192


class Parts:
    """The documents of a parts folder, in part-name order, read a column set or a batch at a time."""

    def __init__(self, folder: Path):
        self.files = list_parts(folder)
        metas = read_many(pq.read_metadata, self.files)  # some 700 footers at 100x the example
        schemas = [m.schema.to_arrow_schema() for m in metas]
        self._names = [set(schema.names) for schema in schemas]
        self.schema = pa.unify_schemas(schemas) if schemas else empty_docs().schema
        self._groups = [[m.row_group(g).num_rows for g in range(m.num_row_groups)] for m in metas]
        self.rows = [m.num_rows for m in metas]
        self.n = int(sum(self.rows))
        self.bytes = sum(p.stat().st_size for p in self.files)

    def columns(self, names: list[str]) -> dict[str, pa.Array | None]:
        """Whole columns (small ones: ids, keys); None for a column no part has."""
        have = [c for c in names if c in self.schema.names]
        fields = pa.schema([self.schema.field(c) for c in have])

        def read(k: int) -> pa.Table:
            return _conform(pq.read_table(self.files[k], columns=[c for c in have if c in self._names[k]]), fields)

        tables = read_many(read, list(range(len(self.files))))
        t = pa.concat_tables(tables) if tables else fields.empty_table()
        return {c: (t.column(c).combine_chunks() if c in have else None) for c in names}

    def batches(self, columns: list[str] | None = None, rows: np.ndarray | None = None
                ) -> Iterator[tuple[np.ndarray, pa.Table]]:
        """(global indices, table) per batch; `rows` (sorted indices): only those documents."""
        names = columns or self.schema.names
        fields = pa.schema([self.schema.field(c) for c in names])
        offset = 0
        for path, n, present in zip(self.files, self.rows, self._names, strict=True):
            lo, hi = (np.searchsorted(rows, [offset, offset + n]) if rows is not None else (0, 1))
            if hi > lo:
                f = pq.ParquetFile(path)
                have = [c for c in names if c in present]
                start = offset
                for batch in f.iter_batches(batch_size=BATCH, columns=have):
                    idx = np.arange(start, start + batch.num_rows)
                    start += batch.num_rows
                    table = _conform(pa.Table.from_batches([batch]), fields)
                    if rows is not None:
                        keep = np.isin(idx, rows[lo:hi])
                        if not keep.any():
                            continue
                        idx, table = idx[keep], table.filter(pa.array(keep))
                    yield idx, table
            offset += n

    def slices(self) -> Iterator[tuple[Path, int, int, int, int]]:
        """(part, row group, first row in it, rows, global index of that row) of every batch of at most BATCH
        rows that a worker can read on its own."""
        offset = 0
        for path, groups in zip(self.files, self._groups, strict=True):
            for g, n in enumerate(groups):
                for start in range(0, n, BATCH):
                    yield path, g, start, min(BATCH, n - start), offset + start
                offset += n

    def hashed(self, spec: NgramSpec, selected: np.ndarray, is_eval: np.ndarray, executor: Any
               ) -> Iterator[HashedBatch]:
        """Decontamination's first pass (text.decontaminate.hash_batch) over every batch, on the executor's
        workers, in document order."""
        tasks = [(path, g, start, rows, lo, selected[lo:lo + rows], is_eval[lo:lo + rows])
                 for path, g, start, rows, lo in self.slices()]
        return executor.map(_HashSlice(spec), tasks)

    def texts(self, rows: np.ndarray | None) -> Iterator[tuple[np.ndarray, list[str]]]:
        """The TextSource decontamination reads (vertical_dag.text.decontaminate)."""
        if rows is not None and not len(rows):
            return
        for idx, table in self.batches(["text"], rows):
            yield idx, table.column("text").to_pylist()

    def map_texts(self, executor: Any) -> TextMapper:
        """The TextMapper decontamination checks training documents with: each batch holding some of the rows
        read, and fn run, by one of the executor's workers."""

        def run(fn: Callable[[np.ndarray, list[str]], Any], rows: np.ndarray) -> Iterator[Any]:
            tasks = []
            for path, g, start, n, first in self.slices():
                lo, hi = np.searchsorted(rows, [first, first + n])
                if hi > lo:
                    tasks.append((path, g, start, n, first, rows[lo:hi]))
            # results are a few numbers per document: more in flight keeps the workers busy
            return executor.map(_TextsOf(fn), tasks, window=8 * executor.workers)

        return run


@dataclass(frozen=True)
class _HashSlice:
    """hash_batch of one (part, row group, first row, rows) slice, read by the worker itself."""

    spec: NgramSpec

    def __call__(self, task: tuple[Path, int, int, int, int, np.ndarray, np.ndarray]) -> HashedBatch:
        path, group, start, rows, first, selected, is_eval = task
        texts = pq.ParquetFile(path).read_row_group(group, columns=["text"]).slice(start, rows)
        return hash_batch(self.spec, np.arange(first, first + rows), texts.column("text").to_pylist(), selected, is_eval)


@dataclass(frozen=True)
class _TextsOf:
    """fn(indices, texts) of the documents `wanted` (global indices) in one slice, read by the worker itself."""

    fn: Callable[[np.ndarray, list[str]], Any]

    def __call__(self, task: tuple[Path, int, int, int, int, np.ndarray]) -> Any:
        path, group, start, rows, first, wanted = task
        texts = pq.ParquetFile(path).read_row_group(group, columns=["text"]).column("text").slice(start, rows)
        return self.fn(wanted, texts.take(pa.array(wanted - first)).to_pylist())


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table with the schema's columns in its order; a missing one as nulls."""
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


class SplitWriters:
    """One Parquet writer per split, each replacing its file only when all of them finished.

    threaded: each file encoded and compressed on a thread of its own while the caller reads and cuts the
    next batch (records.QueuedWriter); each file still gets its batches in order, so the bytes are the same.
    Measured at 100x the example with two workers, the writes ran alone for some 10 s after the gate's
    measure on the workers had finished."""

    def __init__(self, out: Path, names: tuple[str, ...], schema: pa.Schema, threaded: bool = False):
        self._stack = ExitStack()
        self.schema = schema
        self.writers: dict[str, QueuedWriter] = {}
        for name in names:
            tmp = self._stack.enter_context(atomic_path(out / f"{name}.parquet"))
            self.writers[name] = self._stack.enter_context(QueuedWriter(tmp, schema, threaded))

    def write(self, name: str, table: pa.Table) -> None:
        if table.num_rows:
            self.writers[name].write(table.cast(self.schema))

    def __enter__(self) -> SplitWriters:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                for writer in self.writers.values():
                    writer.drain()  # every file complete before any replaces its old one
        except BaseException as e:  # a failed write: no file replaced
            self._stack.__exit__(type(e), e, e.__traceback__)
            raise
        self._stack.__exit__(*exc)
