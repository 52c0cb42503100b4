"""Readers per raw format behind one interface: `read(path, opts) -> Iterator[RawRecord | BadRecord]`.

A reader raises FileRejected for a file it cannot read at all (binary, wrong format, no text column);
everything else, good or bad, is yielded record by record so one broken line never costs the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from . import delimited, html, jsonl, parquet, plaintext, sqlite
from .base import BadRecord, FileRejected, RawRecord, ReadOptions, Record, meta_json, record_from_mapping

READERS: dict[str, Callable[[Path, ReadOptions], Iterator[Record]]] = {
    "jsonl": jsonl.read,
    "parquet": parquet.read,
    "csv": delimited.read,
    "text": plaintext.read,
    "markdown": plaintext.read,
    "html": html.read,
    "sqlite": sqlite.read,
}

EXTENSIONS: dict[str, str] = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
    ".csv": "csv", ".tsv": "csv",
    ".txt": "text", ".text": "text", ".rst": "text",
    ".md": "markdown", ".markdown": "markdown",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".db": "sqlite", ".sqlite": "sqlite", ".sqlite3": "sqlite",
}

# Files that belong to another file (SQLite journals) or to tools, never documents themselves.
SIDECAR_SUFFIXES = ("-journal", "-wal", "-shm")


def detect_format(path: Path | str, declared: str = "auto") -> str:
    """The reader for a file: the declared format, or by extension; FileRejected('unsupported_format')."""
    if declared != "auto":
        return declared
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise FileRejected("unsupported_format", f"no reader for extension {suffix or '(none)'!r}")
    return EXTENSIONS[suffix]


def read(path: Path | str, opts: ReadOptions | None = None, fmt: str = "auto") -> Iterator[Record]:
    """Every record of one raw file. Raises FileRejected before yielding when the file cannot be read at all."""
    path = Path(path)
    opts = opts or ReadOptions()
    return READERS[detect_format(path, fmt)](path, opts)


__all__ = [
    "BadRecord", "EXTENSIONS", "FileRejected", "READERS", "RawRecord", "ReadOptions", "Record", "SIDECAR_SUFFIXES",
    "detect_format", "meta_json", "read", "record_from_mapping",
]
