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


def detect_format(path: Path | str, declared: str = "auto", content: Path | None = None,
                  encodings: tuple[str, ...] = ReadOptions.encodings) -> str:
    """The reader for a file: by extension, or the declared format; FileRejected('unsupported_format').

    A compressed file or archive is one by its name whatever the source declares: the declared format is then
    what its members are (ReadOptions.member_format). A gzip'd WARC is a WARC. A name with no known extension
    (README, a changelog, notes.v2) is plain text when its bytes (`content`: the file, or a decompressed
    member) decode as text.
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
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    if content is not None and _looks_like_text(content, encodings):
        return "text"
    raise FileRejected("unsupported_format", f"no reader for extension {suffix or '(none)'!r}")


def _looks_like_text(path: Path, encodings: tuple[str, ...]) -> bool:
    """Strict, since the name gave no hint: decodable, no NUL byte without a BOM, and almost every character
    printable (a zip or office signature such as PK\x03\x04 is not text)."""
    from .encoding import detect, read_sample

    try:
        sample, whole = read_sample(path)
        if not sample or (b"\x00" in sample and not sample.startswith((b"\xff\xfe", b"\xfe\xff"))):
            return False
        enc = detect(sample, encodings, final=whole)
        bom = sample.startswith((b"\xff\xfe", b"\xfe\xff"))
        if enc.replace("_", "-").lower().startswith(("utf-16", "utf-32")) and not bom:
            return False  # any even number of bytes "decodes" as UTF-16: without a BOM it proves nothing
        text = sample.decode(enc, errors="ignore")
    except (FileRejected, OSError, LookupError):
        return False
    odd = sum(1 for c in text if not (c.isprintable() or c in "\t\n\r\f"))
    return bool(text.strip()) and odd <= 0.01 * len(text)


def read(path: Path | str, opts: ReadOptions | None = None, fmt: str = "auto") -> Iterator[Record]:
    """Every record of one raw file. Raises FileRejected before yielding when the file cannot be read at all."""
    path = Path(path)
    opts = opts or ReadOptions()
    return READERS[detect_format(path, fmt, path, opts.encodings)](path, opts)


__all__ = [
    "BadRecord", "CONTAINER_FORMATS", "EXTENSIONS", "FileRejected", "READERS", "RawRecord", "ReadOptions", "Record", "SIDECAR_SUFFIXES",
    "detect_format", "meta_json", "read", "record_from_mapping", "where",
]
