"""CSV / TSV with a header row: one record per row. A row with the wrong number of fields, or one the csv
module cannot parse (an unclosed or stray quote), becomes a BadRecord naming the row and its physical line.

A broken quote makes the csv module read on across line breaks until something fails to parse; the rows it
swallowed are not lost: parsing restarts at the physical line after the one where the broken record began,
so only that record is quarantined.
"""

from __future__ import annotations

import csv
import io
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from .base import BadRecord, FileRejected, RawRecord, ReadOptions, Record, record_from_mapping
from .encoding import detect_file


class _Lines:
    """Physical lines of a text file with push-back: what the current record consumed can be re-read."""

    def __init__(self, f: io.TextIOBase) -> None:
        self.f = f
        self.pending: deque[tuple[int, str]] = deque()
        self.consumed: list[tuple[int, str]] = []
        self.line_no = 0

    def __iter__(self) -> Iterator[str]:
        while True:
            if self.pending:
                item = self.pending.popleft()
            else:
                line = self.f.readline()
                if not line:
                    return
                self.line_no += 1
                item = (self.line_no, line)
            self.consumed.append(item)
            yield item[1]

    def start_record(self) -> None:
        self.consumed = []

    def first_line(self) -> int:
        return self.consumed[0][0] if self.consumed else self.line_no

    def resync(self) -> None:
        """Give back every line the failed record consumed except its first."""
        self.pending.extendleft(reversed(self.consumed[1:]))
        self.consumed = []


def read(path: Path, opts: ReadOptions) -> Iterator[Record]:
    enc = detect_file(path, opts.encodings)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else opts.csv_delimiter
    csv.field_size_limit(max(opts.max_doc_chars * 2, 1 << 20))  # over-long fields reach the too_long check
    with open(path, "rb") as fb, io.TextIOWrapper(fb, encoding=enc, errors="strict", newline="") as f:
        lines = _Lines(f)
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            raise FileRejected("bad_header", f"header row (line 1): {exc}") from None
        header = [h.lstrip("\ufeff").strip() for h in header]
        if opts.text_field not in header:
            raise FileRejected("missing_text", f"no column {opts.text_field!r} (columns: {', '.join(header)[:200]})")
        row_no = 0
        while True:
            lines.start_record()
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                yield BadRecord(f"row {row_no + 1}", "encoding_error",
                                f"line {lines.line_no + 1}: not valid {enc} ({exc.reason}); rest of file unread")
                return
            except csv.Error as exc:
                row_no += 1
                yield BadRecord(f"row {row_no}", "bad_row", f"line {lines.first_line()}: {exc}; read on from the next line")
                lines.resync()
                reader = csv.reader(lines, delimiter=delimiter, strict=True)
                continue
            if not row or row == [""]:
                continue  # blank line: not a record
            row_no += 1
            location = f"row {row_no}"
            if len(row) != len(header):
                yield BadRecord(location, "bad_row", f"expected {len(header)} fields, got {len(row)} (line {lines.first_line()})")
                continue
            rec = record_from_mapping(dict(zip(header, row, strict=True)), location, opts)
            if isinstance(rec, RawRecord):
                rec.meta.setdefault("encoding", enc)
            yield rec
