"""Plain text and Markdown: the whole file is one document. Markdown's first heading becomes meta.title."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from .base import RawRecord, ReadOptions, Record
from .encoding import decode_file

_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def read(path: Path, opts: ReadOptions) -> Iterator[Record]:
    text, enc = decode_file(path, opts.encodings)
    text = text.lstrip("\ufeff")
    meta: dict[str, str] = {"encoding": enc}
    if path.suffix.lower() in (".md", ".markdown"):
        m = _HEADING.search(text)
        if m:
            meta["title"] = m.group(1)
    yield RawRecord(key="doc", location="", text=text, meta=meta)
