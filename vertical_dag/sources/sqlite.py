"""SQLite: rows of a read-only query (params `query`), the database opened with mode=ro and query_only.

Without a query, the first table that has a text-like column named like the source's text_field is read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from .base import FileRejected, ReadOptions, Record, record_from_mapping

_TEXT_TYPES = ("", "TEXT", "CLOB", "CHAR", "VARCHAR", "NVARCHAR", "NCHAR", "STRING")


def default_query(con: sqlite3.Connection, text_field: str) -> str:
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
    for table in tables:
        quoted = '"' + table.replace('"', '""') + '"'
        for _cid, name, decl, *_ in con.execute(f"PRAGMA table_info({quoted})"):
            if name == text_field and (decl or "").upper().split("(")[0].strip() in _TEXT_TYPES:
                return f"SELECT * FROM {quoted}"
    raise FileRejected("missing_text", f"no table has a text column {text_field!r} (tables: {', '.join(tables)[:200]})")


def read(path: Path, opts: ReadOptions) -> Iterator[Record]:
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise FileRejected("invalid_sqlite", str(exc)) from None
    try:
        con.execute("PRAGMA query_only = ON")
        try:
            query = opts.query or default_query(con, opts.text_field)
            cur = con.execute(query)
        except sqlite3.DatabaseError as exc:
            reason = "invalid_sqlite" if "not a database" in str(exc) else "query_failed"
            raise FileRejected(reason, str(exc)) from None
        columns = [d[0] for d in cur.description or []]
        if opts.text_field not in columns:
            raise FileRejected("missing_text", f"query returns no column {opts.text_field!r} (columns: {', '.join(columns)})")
        for row_no, row in enumerate(cur, 1):
            yield record_from_mapping(dict(zip(columns, row, strict=True)), f"row {row_no}", opts)
    finally:
        con.close()
