"""The data contract: Arrow schemas for documents and the ledger, atomic writes, and per-part bookkeeping.

Datasets are folders of Parquet *parts*. Ingest writes one part per raw file; later stages map each input
part to an output part, so a new raw batch flows through as new parts and nothing old is rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

T = TypeVar("T")
P = TypeVar("P")

DOC_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("batch", pa.string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=False),
        pa.field("lang", pa.string()),
        pa.field("meta", pa.string()),  # JSON object
    ]
)
DOC_COLUMNS = DOC_SCHEMA.names

LEDGER_ACTIONS = ("dropped", "quarantined", "redacted", "split", "flagged", "replaced")
LEDGER_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("ref_doc_id", pa.string()),
    ]
)


def make_doc_id(source: str, location: str) -> str:
    """Stable id from where a record came from (source name + file + record key), not from its content."""
    return hashlib.blake2b(f"{source}\x00{location}".encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class LedgerEntry:
    doc_id: str
    stage: str
    action: str
    reason: str
    detail: str = ""
    ref_doc_id: str | None = None


def ledger_table(entries: Iterable[LedgerEntry]) -> pa.Table:
    rows = [asdict(e) for e in entries]
    if not rows:
        return LEDGER_SCHEMA.empty_table()
    return pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)


def empty_docs(extra: pa.Schema | None = None) -> pa.Table:
    schema = DOC_SCHEMA if extra is None else pa.unify_schemas([DOC_SCHEMA, extra])
    return schema.empty_table()


# ---------------------------------------------------------------- atomic writes


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs should get the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_temporaries(folder: Path | str) -> None:
    """Remove what atomic_path leaves when a run is killed mid-write (.name.*.tmp, anywhere under folder):
    a stage does this at its start, under its lock, so none of them ends up in a DVC output."""
    folder = Path(folder)
    for tmp in folder.rglob(".*.tmp") if folder.exists() else []:
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def write_parquet(table: pa.Table, path: Path | str, **kwargs: Any) -> None:
    kwargs.setdefault("compression", "zstd")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


class QueuedWriter:
    """A Parquet file written from the caller's tables, in order. threaded: each table is encoded and
    compressed on a thread of the writer's own (Arrow releases the GIL for both) while the caller goes on,
    at most IN_FLIGHT tables queued; the file's bytes are the same either way. Leaving the block waits for
    every queued table (a failed write raises there) and closes the file."""

    IN_FLIGHT = 4

    def __init__(self, path: Path | str, schema: pa.Schema, threaded: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("compression", "zstd")
        self._writer = pq.ParquetWriter(path, schema, **kwargs)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="parquet-write") if threaded else None
        self._pending: deque[Future] = deque()

    def write(self, table: pa.Table) -> None:
        if self._thread is None:
            self._writer.write_table(table)
            return
        while len(self._pending) >= self.IN_FLIGHT:
            self._pending.popleft().result()
        self._pending.append(self._thread.submit(self._writer.write_table, table))

    def drain(self) -> None:
        """Until every queued table is written; the first failed write raises here."""
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> QueuedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.drain()
        finally:
            if self._thread is not None:
                self._thread.shutdown(wait=True)  # nothing still writing when the file closes
            self._writer.close()


def write_json(obj: Any, path: Path | str, indent: int | None = 2) -> None:
    """indent=None for files rewritten often and read by programs: json's C encoder runs only without indent."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=False, default=str) + "\n")


def write_text(text: str, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: Path | str, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text(encoding="utf-8"))


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(path: Path | str, old: dict | None = None) -> dict[str, Any]:
    """size + mtime_ns + sha256; the sha256 is reused from `old` when size and mtime are unchanged, so an
    incremental stage does not re-read files it has already seen."""
    st = Path(path).stat()
    fp: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if old and old.get("size") == fp["size"] and old.get("mtime_ns") == fp["mtime_ns"] and old.get("sha256"):
        fp["sha256"] = old["sha256"]
    else:
        fp["sha256"] = file_sha256(path)
    return fp


# ---------------------------------------------------------------- parts


def read_many(read: Callable[[P], T], paths: list[P]) -> list[T]:
    """read(path) for every path (or other item), in order, on a few threads: a gate reads hundreds of small
    Parquet files (a profile or ledger per part), and Arrow's reads and hashlib release the GIL."""
    if len(paths) < 8:
        return [read(p) for p in paths]
    with ThreadPoolExecutor(min(8, (os.cpu_count() or 1) * 2), thread_name_prefix="read-many") as pool:
        return list(pool.map(read, paths))


def list_parts(folder: Path | str) -> list[Path]:
    folder = Path(folder)
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith("."))


def row_slices(src: pq.ParquetFile, batch_size: int) -> list[tuple[int, int, int]]:
    """(row group, first row, rows) of every batch of a Parquet file: row groups cut to at most batch_size rows,
    so a worker can read one batch on its own."""
    out = []
    for g in range(src.num_row_groups):
        n = src.metadata.row_group(g).num_rows
        out.extend((g, s, min(batch_size, n - s)) for s in range(0, n, batch_size))
    return out


def read_parts(folder: Path | str, columns: list[str] | None = None) -> pa.Table:
    parts = list_parts(folder)
    if not parts:
        return empty_docs()
    tables = [pq.read_table(p, columns=columns) for p in parts]
    return pa.concat_tables(tables, promote_options="default")


def iter_batches(folder: Path | str, columns: list[str] | None = None, batch_size: int = 4096) -> Iterator[pa.RecordBatch]:
    """Stream record batches over every part in `folder`, in part-name order, never holding all text at once."""
    for part in list_parts(folder):
        yield from pq.ParquetFile(part).iter_batches(batch_size=batch_size, columns=columns)


def read_ledger(folder: Path | str) -> pa.Table:
    parts = list_parts(folder)
    if not parts:
        return LEDGER_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(p).cast(LEDGER_SCHEMA) for p in parts])
