"""Word .docx (python-docx): one document per file, paragraphs and tables in reading order.

Headings stay headings: a paragraph styled "Heading N" becomes a Markdown heading ("## ..."), "Title" a
level-1 one, and the document title (core properties, else the first heading) goes to meta.title. A table
becomes one line per row, cells separated by " | " (a merged cell counted once). Page headers and footers
are left out (they repeat on every page). Binary Word (.doc) is rejected with a hint: this reader only
understands the XML format.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docx
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table
from docx.text.paragraph import Paragraph

from .base import FileRejected, RawRecord, ReadOptions, Record

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Word 97-2003 and encrypted Office files
LEGACY_HINT = "open it in Word or LibreOffice and save it as .docx (`soffice --headless --convert-to docx`)"
_HEADING = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)


def _check_container(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic == OLE_MAGIC:
        kind = "binary Word 97-2003 (.doc)" if path.suffix.lower() == ".doc" else "an encrypted or binary Office file"
        raise FileRejected("legacy_word_format", f"{kind}, not .docx: {LEGACY_HINT}")
    if path.suffix.lower() == ".doc":
        raise FileRejected("legacy_word_format", f"a .doc file that is not Word 97-2003 either: {LEGACY_HINT}")


def _heading_levels(document: Any) -> dict[str, int]:
    """Style id -> heading level, for the paragraph styles that are headings (looked up once per document:
    python-docx's per-paragraph style lookup costs more than the rest of reading)."""
    levels = {}
    for style in document.styles:
        name = (style.name or "").strip()
        m = _HEADING.match(name)
        if name.lower() == "title" or m:
            levels[style.style_id] = int(m.group(1)) if m else 1
    return levels


def _paragraph(p: Paragraph, levels: dict[str, int]) -> tuple[str, int]:
    """(text, heading level or 0)."""
    return p.text.strip(), levels.get(p._p.style or "", 0)


def _table(t: Table) -> list[str]:
    rows = []
    for row in t.rows:
        cells: list[str] = []
        last = None
        for cell in row.cells:
            if cell._tc is last:  # a merged cell is returned once per grid column it spans
                continue
            last = cell._tc
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def read(path: Path, opts: ReadOptions) -> Iterator[Record]:
    _check_container(path)
    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise FileRejected("invalid_docx", f"not a readable .docx: {type(exc).__name__}: {exc}"[:300]) from None
    levels = _heading_levels(document)
    lines: list[str] = []
    first_heading = None
    headings = tables = 0
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text, level = _paragraph(block, levels)
            if not text:
                continue
            if level:
                headings += 1
                first_heading = first_heading or text
                lines.append(f"{'#' * level} {text}")
            else:
                lines.append(text)
        else:
            tables += 1
            lines.extend(_table(block))
    meta: dict[str, object] = {"headings": headings, "tables": tables}
    title = (document.core_properties.title or "").strip() or first_heading
    if title:
        meta["title"] = title
    yield RawRecord(key="doc", location="", text="\n".join(lines), meta=meta)
