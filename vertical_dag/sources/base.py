"""What every reader yields: a good record, a bad record (one input record that cannot become a document),
or a whole-file rejection (FileRejected). The ingest stage turns bad records and rejections into ledger rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True)
class ReadOptions:
    """How to read one file (from the source's params): which fields hold the text, id and metadata."""

    text_field: str = "text"
    id_field: str | None = "id"
    meta_fields: tuple[str, ...] | None = None  # None: every field but the text goes to meta
    query: str | None = None  # sqlite only
    csv_delimiter: str = ","
    encodings: tuple[str, ...] = ("utf-8", "gb18030", "utf-16", "big5")
    max_doc_chars: int = 2_000_000  # also bounds CSV field sizes
    member_format: str = "auto"  # the source's declared format: what members of archives / compressed files are
    pdf_unit: str = "file"  # "file": one document per PDF; "page": one per page
    sheet_unit: str = "row"  # spreadsheets: "row" (a header row, then one document per row) or "sheet"
    text_columns: tuple[str, ...] | None = None  # spreadsheet rows: columns joined into the text (None: text_field)
    archive_max_members: int = 10_000
    archive_max_bytes: int = 4 << 30  # uncompressed bytes one archive / compressed file may expand to
    archive_max_ratio: float = 200.0  # uncompressed / compressed size beyond which expansion stops


@dataclass
class RawRecord:
    """One input record that has text. `key` names it inside its file (its own id, else its position)."""

    key: str
    location: str  # "17" (line), "row 3", "" (the whole file)
    text: str
    meta: dict[str, Any] = field(default_factory=dict)
    has_id: bool = False
    uri: str | None = None  # provenance when not "file:location" (a web page's URL)


@dataclass
class BadRecord:
    """One input record that cannot become a document; `location` names it the same way as RawRecord."""

    location: str
    reason: str
    detail: str
    key: str | None = None


class FileRejected(Exception):
    """The whole file cannot be read (binary, empty, unknown format, ...): one ledger row for the file."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


Record = RawRecord | BadRecord
Reader = Iterator[Record]


def position_key(location: str) -> str:
    """Key of a record that has no id of its own: its position ("line:17", "row:3", "page:2"), never clashing
    with ids."""
    word, _, rest = location.partition(" ")
    if rest and word.isalpha():
        return f"{word}:{rest}"
    return f"line:{location}" if location else "doc"


def where(rel: str, location: str) -> str:
    """Provenance of a record in raw file `rel`: "file", "file:17", or "archive!member:17" for archive members."""
    if not location:
        return rel
    return f"{rel}{location}" if location.startswith("!") else f"{rel}:{location}"


def record_from_mapping(obj: dict[str, Any], location: str, opts: ReadOptions) -> Record:
    """A JSON object / table row -> RawRecord, or BadRecord when its text field is missing or not a string.

    `obj` is consumed: what is left of it after taking the text becomes the metadata (no copy per record).
    """
    text = obj.get(opts.text_field)
    if text is None:
        if opts.text_field in obj:
            return BadRecord(location, "missing_text", f"{opts.text_field!r} is null; it must hold the document's text")
        return BadRecord(location, "missing_text", f"no {opts.text_field!r} field (fields: {', '.join(map(str, obj))[:200]})")
    if not isinstance(text, str):
        return BadRecord(location, "invalid_text", f"{opts.text_field!r} is {type(text).__name__}, not a string")
    rid = obj.get(opts.id_field) if opts.id_field else None
    has_id = rid is not None and rid != ""
    key = str(rid) if has_id else position_key(location)
    if opts.meta_fields is None:
        del obj[opts.text_field]
        meta = obj
    else:
        meta = {k: obj[k] for k in opts.meta_fields if k in obj}
    return RawRecord(key=key, location=location, text=text, meta=meta, has_id=has_id)


def meta_json(meta: dict[str, Any]) -> str | None:
    """Metadata as a JSON object string (UTF-8, not ASCII-escaped); values JSON cannot hold become strings."""
    if not meta:
        return None
    return orjson.dumps(meta, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
