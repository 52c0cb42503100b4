"""SQLite: rows of a read-only query (params `query`), safe on its own whatever the query says.

The database is opened with mode=ro and query_only, and an authorizer allows nothing but reading: no
ATTACH (so no `VACUUM INTO` either, which attaches its target), no writes, no schema changes, no pragmas
beyond the table listing. Without a query, the first table that has a text-like column named like the
source's text_field is read. TEXT values are decoded row by row: a cell that is not UTF-8 is tried in the
configured encodings, and a row with a cell none of them decodes is quarantined alone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from .base import BadRecord, FileRejected, RawRecord, ReadOptions, Record, record_from_mapping
from .encoding import decode_line

_TEXT_TYPES = ("", "TEXT", "CLOB", "CHAR", "VARCHAR", "NVARCHAR", "NCHAR", "STRING")
_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_READ_PRAGMAS = {"table_info", "table_xinfo"}


class Undecodable(bytes):
    """A TEXT cell whose bytes are not valid UTF-8 (decoded later, per row, with the configured encodings)."""


def _text_factory(data: bytes) -> str | Undecodable:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return Undecodable(data)


def _authorize(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
    if action in _READ_ACTIONS or (action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _READ_PRAGMAS):
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that can only read `path` (FileRejected('invalid_sqlite') when it cannot be opened)."""
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        con.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise FileRejected("invalid_sqlite", str(exc)) from None
    con.set_authorizer(_authorize)
    con.text_factory = _text_factory
    return con


def default_query(con: sqlite3.Connection, text_field: str) -> str:
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
    for table in tables:
        quoted = '"' + table.replace('"', '""') + '"'
        for _cid, name, decl, *_ in con.execute(f"PRAGMA table_info({quoted})"):
            if name == text_field and (decl or "").upper().split("(")[0].strip() in _TEXT_TYPES:
                return f"SELECT * FROM {quoted}"
    raise FileRejected("missing_text", f"no table has a text column {text_field!r} (tables: {', '.join(tables)[:200]})")


def _decode_row(obj: dict, opts: ReadOptions) -> tuple[str | None, str | None]:
    """Decode the row's non-UTF-8 cells in place: (encoding used or None, error message or None)."""
    used = None
    for column, value in obj.items():
        if isinstance(value, Undecodable):
            alt = decode_line(bytes(value), [e for e in opts.encodings if e.lower().replace("_", "-") != "utf-8"])
            if alt is None:
                try:
                    bytes(value).decode("utf-8")
                except UnicodeDecodeError as exc:
                    return None, (f"column {column!r}: byte {exc.start} is not valid UTF-8 ({exc.reason}) "
                                  f"nor any of {', '.join(opts.encodings)}")
            else:
                obj[column], used = alt
    return used, None


def read(path: Path, opts: ReadOptions) -> Iterator[Record]:
    con = connect_read_only(path)
    try:
        try:
            query = opts.query or default_query(con, opts.text_field)
            cur = con.execute(query)
        except sqlite3.DatabaseError as exc:
            reason = "invalid_sqlite" if "not a database" in str(exc) else "query_failed"
            detail = str(exc)
            if "authoriz" in detail:
                detail += " (this reader only reads: no writes, ATTACH, VACUUM or PRAGMA)"
            raise FileRejected(reason, detail) from None
        columns = [d[0] for d in cur.description or []]
        if opts.text_field not in columns:
            raise FileRejected("missing_text", f"query returns no column {opts.text_field!r} (columns: {', '.join(columns)})")
        for row_no, row in enumerate(cur, 1):
            obj = dict(zip(columns, row, strict=True))
            used, error = _decode_row(obj, opts)
            if error is not None:
                yield BadRecord(f"row {row_no}", "encoding_error", error)
                continue
            rec = record_from_mapping(obj, f"row {row_no}", opts)
            if isinstance(rec, RawRecord):
                rec.meta.setdefault("encoding", used or "utf-8")
            yield rec
    finally:
        con.close()
