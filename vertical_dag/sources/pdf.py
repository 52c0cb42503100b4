"""PDF with a text layer: one document per file (default) or per page (`pdf_unit: page`).

Text comes from PDFium (pypdfium2). On the 72 sample PDFs in pypdf 7.1.0's source distribution it was
11.9x faster than pypdf (1.7 s against 20.4 s for 14.7 MB; `benchmarks/ingest.py --pdf-dir`) and got as much
text (607,852 against 600,521 characters); it also marks words hyphenated at a line end (U+0002), which makes
repairing them exact, and keeps CJK text in order.

Clean-up, page by page: lines repeated at the top or bottom of most pages (running headers and footers,
digits ignored so "Page 3" matches "Page 4") and bare page numbers are removed; words broken by a hyphen at
a line end are joined in space-separated scripts; spaces and line breaks that layout put between two CJK
characters are removed. A PDF without any text (a scan) is rejected as `no_text_layer`; an encrypted or
corrupt one is rejected with PDFium's message.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pypdfium2 as pdfium

from ..text.scripts import CJK_CLASS, CJK_PUNCT_RANGES, char_class
from .base import BadRecord, FileRejected, RawRecord, ReadOptions, Record

EDGE_LINES = 3  # lines at the top and at the bottom of a page where headers and footers can be
_CJK = CJK_CLASS + char_class(CJK_PUNCT_RANGES)  # Hangul is not joined: Korean puts spaces between words
_CJK_SPACE = re.compile(f"(?<=[{_CJK}])[ \u3000]+(?=[{_CJK}])")
# A line break inside a CJK sentence (after anything but sentence-final punctuation) is layout, not text.
_CJK_WRAP = re.compile(f"(?<=[{_CJK}])(?<![。！？：；」』）])\n(?=[{_CJK}])")
_HYPHEN_WRAP = re.compile(r"(?<=[a-zà-öø-ÿ])-\n(?=[a-zà-öø-ÿ])")
_PAGE_NUMBER = re.compile(r"^\W*(?:(?:page|p\.|seite|página)\s*)?(?:\d{1,5}|[ivxlc]{1,6})(?:\s*(?:/|of|von|de)\s*\d{1,5})?\W*$"
                          r"|^第\s*\d{1,5}\s*页(?:\s*[/／共]\s*\d{1,5}\s*页?)?$", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_WS = re.compile(r"\s+")
NO_TEXT_HINT = "no extractable text (a scanned document?): run OCR first (e.g. `ocrmypdf --sidecar out.txt`) and ingest the text"


def _signature(line: str) -> str:
    return _WS.sub(" ", _DIGITS.sub("#", line)).strip().lower()


def _page_lines(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x02\n", "").replace("\x02", "")
    return [line.rstrip() for line in text.split("\n")]


def _edges(lines: list[str]) -> set[int]:
    """Indexes of the first and last non-blank lines of a page (EDGE_LINES each, at most a third of the page)."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    k = min(EDGE_LINES, max(1, len(filled) // 3))
    return set(filled[:k] + filled[-k:])


def _running(occurrences: list[tuple[int, str]], threshold: int) -> set[tuple[int, str]]:
    """Which (page, line) occurrences of one digit-blind signature are a running header or footer: the same
    text on enough pages, or a short line whose number follows the page number (a folio, "Vol 3 - 17")."""
    text, n = Counter(t for _, t in occurrences).most_common(1)[0]
    if n >= threshold:
        return {o for o in occurrences if o[1] == text}
    offsets: Counter[tuple[int, int]] = Counter()
    numbers = {o: [int(d) for d in _DIGITS.findall(o[1])] for o in occurrences if len(o[1]) <= 60}
    for (page, _), nums in numbers.items():
        offsets.update({(k, num - page) for k, num in enumerate(nums)})
    if offsets:
        (k, offset), n = offsets.most_common(1)[0]
        if n >= threshold:
            return {o for o, nums in numbers.items() if len(nums) > k and nums[k] - o[0] == offset}
    return set()


def strip_running_lines(pages: list[list[str]]) -> list[list[str]]:
    """Remove running headers/footers (lines at page edges repeated on most pages, when there are 3 pages
    or more) and bare page numbers at page edges."""
    by_signature: dict[str, list[tuple[int, str]]] = {}
    for page, lines in enumerate(pages):
        for sig, line in {_signature(lines[i]): lines[i].strip() for i in _edges(lines)}.items():
            by_signature.setdefault(sig, []).append((page, line))
    threshold = max(3, len(pages) // 2 + 1)
    running: set[tuple[int, str]] = set()
    if len(pages) >= 3:
        for occurrences in by_signature.values():
            if len(occurrences) >= threshold:
                running |= _running(occurrences, threshold)
    out = []
    for page, lines in enumerate(pages):
        edges = _edges(lines)
        out.append([line for i, line in enumerate(lines) if i not in edges or not (
            (page, line.strip()) in running or _PAGE_NUMBER.match(line.strip()))])
    return out


def clean_text(lines: list[str]) -> str:
    text = _SURROGATE.sub("\ufffd", "\n".join(lines))  # a broken ToUnicode map can yield lone surrogates
    text = _HYPHEN_WRAP.sub("", text)
    text = _CJK_WRAP.sub("", _CJK_SPACE.sub("", text))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _open(path: Path) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        message = str(exc)
        reason = "encrypted_pdf" if "password" in message.lower() else "invalid_pdf"
        raise FileRejected(reason, f"PDFium: {message}") from None


def _extract(doc: pdfium.PdfDocument) -> tuple[list[list[str]], dict[int, str]]:
    pages: list[list[str]] = []
    errors: dict[int, str] = {}
    for i in range(len(doc)):
        try:
            page = doc[i]
            try:
                textpage = page.get_textpage()
                pages.append(_page_lines(textpage.get_text_bounded()))
                textpage.close()
            finally:
                page.close()
        except pdfium.PdfiumError as exc:
            errors[i + 1] = str(exc)
            pages.append([])
    return pages, errors


def read(path: Path, opts: ReadOptions) -> Iterator[Record]:
    doc = _open(path)
    try:
        n = len(doc)
        meta = {"pages": n, "extractor": "pdfium"}
        title = (doc.get_metadata_dict().get("Title") or "").strip()
        if title:
            meta["title"] = title
        pages, errors = _extract(doc)
    finally:
        doc.close()
    if n == 0:
        raise FileRejected("empty_file", "the PDF has no pages")
    if errors and len(errors) == n:
        raise FileRejected("invalid_pdf", f"no page could be read (page 1: {errors[1]})")
    if not any(line.strip() for lines in pages for line in lines) and not errors:
        raise FileRejected("no_text_layer", f"{n} page{'s' if n > 1 else ''}, {NO_TEXT_HINT}")
    texts = [clean_text(lines) for lines in strip_running_lines(pages)]
    if opts.pdf_unit == "page":
        for i, text in enumerate(texts, 1):
            if i in errors:
                yield BadRecord(f"page {i}", "page_error", f"PDFium: {errors[i]}", key=f"page:{i}")
            elif not text:
                yield BadRecord(f"page {i}", "no_text_layer", f"page {i}: {NO_TEXT_HINT}", key=f"page:{i}")
            else:
                yield RawRecord(key=f"page:{i}", location=f"page {i}", text=text, meta={**meta, "page": i})
        return
    for i, message in errors.items():
        yield BadRecord(f"page {i}", "page_error", f"PDFium: {message}; the document has the other pages", key=f"page:{i}")
    yield RawRecord(key="doc", location=f"pages 1-{n}" if n > 1 else "page 1", text="\n\n".join(t for t in texts if t), meta=meta)
