"""Readers per raw format behind one interface: `read(path, opts) -> Iterator[RawRecord | BadRecord]`.

A reader raises FileRejected for a file it cannot read at all (binary, wrong format, no text column);
everything else, good or bad, is yielded record by record so one broken line never costs the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from . import archive, delimited, html, jsonl, parquet, pdf, plaintext, spreadsheet, sqlite, warc, word
from .base import (
    BadRecord,
    FileRejected,
    RawRecord,
    ReadOptions,
    Record,
    meta_json,
    record_from_mapping,
    where,
)

READERS: dict[str, Callable[[Path, ReadOptions], Iterator[Record]]] = {
    "jsonl": jsonl.read,
    "parquet": parquet.read,
    "csv": delimited.read,
    "text": plaintext.read,
    "markdown": plaintext.read,
    "html": html.read,
    "sqlite": sqlite.read,
    "pdf": pdf.read,
    "docx": word.read,
    "xlsx": spreadsheet.read,
    "warc": warc.read,
    "zip": archive.read_zip,
    "tar": archive.read_tar,
    "compressed": archive.read_compressed,
}
CONTAINER_FORMATS = ("zip", "tar", "compressed")

EXTENSIONS: dict[str, str] = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
    ".csv": "csv", ".tsv": "csv",
    ".txt": "text", ".text": "text", ".rst": "text",
    ".md": "markdown", ".markdown": "markdown",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".db": "sqlite", ".sqlite": "sqlite", ".sqlite3": "sqlite",
    ".pdf": "pdf",
    ".docx": "docx", ".doc": "docx",  # .doc: rejected by the reader with a hint (binary Word)
    ".xlsx": "xlsx", ".xlsm": "xlsx", ".xls": "xlsx",  # .xls: rejected by the reader with a hint
    ".warc": "warc",
}
WARC_SUFFIXES = (".warc.gz",)

# Files that belong to another file (SQLite journals) or to tools, never documents themselves.
SIDECAR_SUFFIXES = ("-journal", "-wal", "-shm")


def detect_format(path: Path | str, declared: str = "auto") -> str:
    """The reader for a file: by extension, or the declared format; FileRejected('unsupported_format').

    A compressed file or archive is one by its name whatever the source declares: the declared format is then
    what its members are (ReadOptions.member_format). A gzip'd WARC is a WARC.
    """
    name = Path(path).name.lower()
    if name.endswith(WARC_SUFFIXES):
        return "warc"
    container = archive.container_kind(name)
    if container is not None and declared not in CONTAINER_FORMATS:
        return container
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
    "BadRecord", "CONTAINER_FORMATS", "EXTENSIONS", "FileRejected", "READERS", "RawRecord", "ReadOptions", "Record", "SIDECAR_SUFFIXES",
    "detect_format", "meta_json", "read", "record_from_mapping", "where",
]
