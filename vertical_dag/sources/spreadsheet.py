"""Excel .xlsx / .xlsm (openpyxl, read-only streaming): one document per row, or per sheet.

`sheet_unit: row` (default): the first non-empty row of each sheet is its header; the text is the column
named by `text_field`, or the columns in `text_columns` joined by line breaks; every other column goes to
meta. A sheet without those columns is one bad record naming it. `sheet_unit: sheet`: each sheet is one
document, a line per row, cells separated by tabs. Formulas give their cached values. Legacy .xls is
rejected with a hint.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openpyxl

from .base import BadRecord, FileRejected, RawRecord, ReadOptions, Record
from .word import OLE_MAGIC

LEGACY_HINT = "save it as .xlsx (`soffice --headless --convert-to xlsx`)"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _open(path: Path) -> Any:
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic == OLE_MAGIC or path.suffix.lower() == ".xls":
        raise FileRejected("legacy_excel_format", f"binary Excel 97-2003 or an encrypted workbook, not .xlsx: {LEGACY_HINT}")
    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise FileRejected("invalid_xlsx", f"not a readable .xlsx: {type(exc).__name__}: {exc}"[:300]) from None


def _sheet_rows(ws: Any, sheet: str, opts: ReadOptions) -> Iterator[Record]:
    rows = ws.iter_rows(values_only=True)
    header: list[str] | None = None
    header_line = 0
    for line, values in enumerate(rows, 1):
        if any(v is not None and str(v).strip() for v in values):
            header, header_line = [_cell(v) for v in values], line
            break
    if header is None:
        return
    text_columns = list(opts.text_columns or [opts.text_field])
    missing = [c for c in text_columns if c not in header]
    if missing:
        yield BadRecord(f"sheet {sheet}", "missing_text", f"sheet {sheet!r} has no column {', '.join(map(repr, missing))} "
                        f"in its header row {header_line} (columns: {', '.join(h for h in header if h)[:200]})",
                        key=f"sheet:{sheet}")
        return
    index = {name: i for i, name in reversed(list(enumerate(header))) if name}
    id_col = index.get(opts.id_field) if opts.id_field else None
    for line, values in enumerate(rows, header_line + 1):
        cells = list(values) + [None] * (len(header) - len(values))
        if not any(v is not None and str(v).strip() for v in cells):
            continue  # an empty row is not a record
        text = "\n".join(t for t in (_cell(cells[index[c]]) for c in text_columns) if t)
        meta = {name: cells[i] for name, i in index.items() if name not in text_columns and cells[i] is not None}
        if opts.meta_fields is not None:
            meta = {k: v for k, v in meta.items() if k in opts.meta_fields}
        meta["sheet"] = sheet
        rid = _cell(cells[id_col]) if id_col is not None else ""
        key = rid or f"{sheet}!row:{line}"
        yield RawRecord(key=key, location=f"{sheet}!row {line}", text=text, meta=meta, has_id=bool(rid))


def read(path: Path, opts: ReadOptions) -> Iterator[Record]:
    wb = _open(path)
    try:
        for ws in wb.worksheets:
            sheet = ws.title
            if opts.sheet_unit == "sheet":
                lines = ("\t".join(_cell(v) for v in row).rstrip("\t") for row in ws.iter_rows(values_only=True))
                text = "\n".join(line for line in lines if line.strip())
                yield RawRecord(key=f"sheet:{sheet}", location=f"sheet {sheet}", text=text, meta={"sheet": sheet})
            else:
                yield from _sheet_rows(ws, sheet, opts)
    finally:
        wb.close()
