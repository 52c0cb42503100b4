"""Web crawls: WARC files (.warc, .warc.gz; warcio, pure Python, streaming), one document per HTML page.

Each `response` (and `resource`) record is a candidate: HTML is reduced to its main text by the same
extractor as .html files (sources/html.py), text/plain is kept as it is; its `uri` is the record's target
URL. Error responses (HTTP status other than 2xx), other content types and `revisit` records are bad
records naming the URL, so the ledger counts them. Requests, warcinfo and metadata records describe the
crawl, not documents, and are skipped. The page's charset comes from its Content-Type, else it is detected.
"""

from __future__ import annotations

import codecs
import gzip
from collections.abc import Iterator
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

from .base import BadRecord, FileRejected, RawRecord, ReadOptions, Record
from .encoding import detect
from .html import html_to_text

HTML_TYPES = ("text/html", "application/xhtml+xml")
CONTENT_TYPES = ("response", "resource")
SKIPPED_TYPES = ("request", "warcinfo", "metadata")


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            try:
                return codecs.lookup(value.strip("\"' ")).name
            except LookupError:
                return None
    return None


def _decode(body: bytes, content_type: str, opts: ReadOptions) -> tuple[str, str]:
    declared = _charset(content_type)
    if declared:
        try:
            return body.decode(declared), declared
        except UnicodeDecodeError:
            pass  # a wrong header is common: detect instead
    enc = detect(body[:1 << 16], opts.encodings, final=len(body) <= 1 << 16)
    try:
        return body.decode(enc), enc
    except UnicodeDecodeError as exc:
        raise FileRejected("encoding_error", f"byte {exc.start}: not valid {enc} ({exc.reason})") from None


def _record(rec: object, n: int, opts: ReadOptions) -> Record | None:
    kind = rec.rec_type
    url = rec.rec_headers.get_header("WARC-Target-URI") or rec.rec_headers.get_header("WARC-Record-ID") or f"record {n}"
    location = f"record {n}"
    if kind in SKIPPED_TYPES:
        return None
    if kind not in CONTENT_TYPES:
        return BadRecord(location, f"warc_{kind}", f"{url}: a {kind} record, not a page", key=f"record:{n}")
    status = None
    if rec.http_headers is not None:
        status = int(rec.http_headers.get_statuscode() or 0)
        content_type = rec.http_headers.get_header("Content-Type") or ""
    else:
        content_type = rec.rec_headers.get_header("Content-Type") or ""
    if status is not None and not 200 <= status < 300:
        return BadRecord(location, "http_error", f"{url}: HTTP {status}", key=f"record:{n}")
    mime = content_type.split(";")[0].strip().lower()
    if mime not in (*HTML_TYPES, "text/plain"):
        return BadRecord(location, "not_html", f"{url}: content type {mime or '(none)'}", key=f"record:{n}")
    body = rec.content_stream().read(opts.max_doc_chars * 4 + 1)
    try:
        page, enc = _decode(body, content_type, opts)
    except FileRejected as exc:
        return BadRecord(location, exc.reason, f"{url}: {exc.detail}", key=f"record:{n}")
    meta: dict[str, object] = {"url": url, "warc_date": rec.rec_headers.get_header("WARC-Date"),
                               "content_type": mime, "encoding": enc}
    if status is not None:
        meta["http_status"] = status
    if mime == "text/plain":
        text = page
    else:
        text, page_meta = html_to_text(page)
        meta.update(page_meta)
    return RawRecord(key=url, location=location, text=text, meta=meta, has_id=True, uri=url)


def _check_magic(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as g:
                head = g.read(64)
        except (OSError, EOFError) as exc:
            raise FileRejected("invalid_warc", f"gzip: {exc}") from None
    if not head.lstrip(b"\r\n").startswith(b"WARC/"):
        raise FileRejected("invalid_warc", f"does not start with a WARC header (starts {head[:20]!r})")


def read(path: Path, opts: ReadOptions) -> Iterator[Record]:
    _check_magic(path)
    n = end = 0
    size = path.stat().st_size
    with open(path, "rb") as f:
        records = ArchiveIterator(f)
        try:
            for rec in records:
                n += 1
                out = _record(rec, n, opts)
                end = records.get_record_offset() + records.get_record_length()  # reads to the record's end
                if out is not None:
                    yield out
        except ArchiveLoadFailed as exc:
            if n == 0:
                raise FileRejected("invalid_warc", str(exc)[:300]) from None
            yield BadRecord(f"record {n + 1}", "corrupt_warc", f"{exc}; records from {n + 1} on not read"[:500],
                            key=f"record:{n + 1}")
            return
    if n == 0:
        raise FileRejected("invalid_warc", "no WARC record in the file")
    if size - end > 16:  # more than the blank lines that end a record: a record cut short, which warcio skips
        yield BadRecord(f"record {n + 1}", "corrupt_warc", f"the last {size - end} bytes are not a complete WARC record "
                        "(a truncated file?)", key=f"record:{n + 1}")
