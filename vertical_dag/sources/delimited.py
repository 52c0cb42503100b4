"""CSV / TSV with a header row: one record per row. A row with the wrong number of fields, or one the csv
module cannot parse (an unclosed quote), becomes a BadRecord naming the row; the rest of the file is read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from .base import BadRecord, FileRejected, ReadOptions, Record, record_from_mapping
from .encoding import detect_file


def read(path: Path, opts: ReadOptions) -> Iterator[Record]:
    enc = detect_file(path, opts.encodings)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else opts.csv_delimiter
    csv.field_size_limit(max(opts.max_doc_chars * 2, 1 << 20))  # over-long fields reach the too_long check
    with open(path, "rb") as fb, io.TextIOWrapper(fb, encoding=enc, errors="strict", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            raise FileRejected("bad_header", f"header row: {exc}") from None
        header = [h.lstrip("\ufeff").strip() for h in header]
        if opts.text_field not in header:
            raise FileRejected("missing_text", f"no column {opts.text_field!r} (columns: {', '.join(header)[:200]})")
        row_no = 0
        while True:
            row_no += 1
            location = f"row {row_no}"
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                yield BadRecord(location, "encoding_error", f"not valid {enc} ({exc.reason}); rest of file unread")
                return
            except csv.Error as exc:
                yield BadRecord(location, "bad_row", f"{exc} (line {reader.line_num})")
                if "unexpected end of data" in str(exc):
                    return  # an unclosed quote swallowed the rest of the file
                continue
            if not row or row == [""]:
                row_no -= 1  # blank line: not a record
                continue
            if len(row) != len(header):
                yield BadRecord(location, "bad_row", f"expected {len(header)} fields, got {len(row)} (line {reader.line_num})")
                continue
            yield record_from_mapping(dict(zip(header, row, strict=True)), location, opts)
