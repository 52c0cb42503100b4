"""JSON Lines: one object per line, streamed line by line (a 200 MB file is never held as Python objects).

Each bad line is its own BadRecord naming the line: invalid or truncated JSON, a line that is not an object,
a missing text field, or bytes that are not valid in the file's encoding. A .json file that holds one
array of objects is read as that array (it is loaded whole: such files are small by nature).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import orjson

from .base import BadRecord, FileRejected, RawRecord, ReadOptions, Record, record_from_mapping
from .encoding import ascii_compatible, canonical, decode_line, detect_file, read_sample


def _parse(line: bytes | str, location: str, opts: ReadOptions, enc: str = "utf-8") -> Record:
    """One line (bytes in `enc`, or already text) -> a record. orjson first; stdlib json only to explain."""
    if isinstance(line, bytes) and enc not in ("utf-8", "utf-8-sig"):
        try:
            line = line.decode(enc)
        except UnicodeDecodeError:
            pass  # handled below, with the other configured encodings
    try:
        obj = orjson.loads(line)  # orjson checks UTF-8 itself
    except orjson.JSONDecodeError:
        if isinstance(line, bytes):
            try:
                text = line.decode("utf-8") if enc in ("utf-8", "utf-8-sig") else line.decode(enc)
            except UnicodeDecodeError as exc:
                # The file's encoding was decided from its first 64 KiB; a later line may be in another one.
                alt = decode_line(line, [e for e in opts.encodings if canonical(e) != canonical(enc)])
                if alt is None:
                    return BadRecord(location, "encoding_error", f"byte {exc.start}: not valid {enc} ({exc.reason})")
                return _parse(alt[0], location, opts, alt[1])
        else:
            text = line
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            stripped = text.rstrip()
            truncated = exc.pos >= len(stripped) or exc.msg.startswith("Unterminated string")
            reason = "truncated_json" if truncated else "invalid_json"
            what = exc.msg.removesuffix(" at")  # "Invalid control character at" is worded for "...at: line 1"
            if what == "Invalid control character":
                what += " (a raw tab or line break inside a string must be written \\t or \\n)"
            return BadRecord(location, reason, f"{what}, column {exc.colno}")
        # Lone surrogate escapes ("\ud800") are valid JSON that orjson rejects and that no UTF-8 output can hold.
        surrogate = _surrogate(obj)
        if surrogate is not None:
            return BadRecord(location, "invalid_unicode", f"field {surrogate!r} holds a lone surrogate escape "
                                                          "(\\ud800-\\udfff), which is not a character")
    if not isinstance(obj, dict):
        return BadRecord(location, "not_an_object", f"line is a JSON {type(obj).__name__}, not an object")
    rec = record_from_mapping(obj, location, opts)
    if isinstance(rec, RawRecord):
        rec.meta.setdefault("encoding", enc)  # a field of the record's own with that name wins
    return rec


def _surrogate(obj: object, name: str = "") -> str | None:
    """The (dotted) name of the first value or key holding a lone surrogate, or None."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return name or "(value)"
        return None
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = _surrogate(k, name) or _surrogate(v, f"{name}.{k}" if name else str(k))
            if found is not None:
                return found
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found = _surrogate(v, f"{name}[{i}]")
            if found is not None:
                return found
    return None


def _read_array(path: Path, enc: str, opts: ReadOptions) -> Iterator[Record]:
    """A .json file holding one array of objects (not JSON Lines): each element is a record, "row N"."""
    try:
        text = path.read_bytes().decode(enc).lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise FileRejected("encoding_error", f"byte {exc.start}: not valid {enc} ({exc.reason})") from None
    lenient = False
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:  # valid JSON that orjson refuses (a lone surrogate escape): those items are quarantined below
            items, lenient = json.loads(text), True
        except json.JSONDecodeError as exc:
            raise FileRejected("invalid_json", f"not a JSON array: {exc.msg.removesuffix(' at')}, line {exc.lineno} "
                               f"column {exc.colno}") from None
    if not isinstance(items, list):
        raise FileRejected("invalid_json", f"a JSON {type(items).__name__}, not an array of objects")
    for i, obj in enumerate(items, 1):
        surrogate = _surrogate(obj) if lenient else None
        if surrogate is not None:
            yield BadRecord(f"row {i}", "invalid_unicode", f"field {surrogate!r} holds a lone surrogate escape "
                                                          "(\\ud800-\\udfff), which is not a character")
        elif isinstance(obj, dict):
            rec = record_from_mapping(obj, f"row {i}", opts)
            if isinstance(rec, RawRecord):
                rec.meta.setdefault("encoding", enc)
            yield rec
        else:
            yield BadRecord(f"row {i}", "not_an_object", f"item is a JSON {type(obj).__name__}, not an object")


def read(path: Path, opts: ReadOptions) -> Iterator[Record]:
    enc = detect_file(path, opts.encodings)
    if path.suffix.lower() == ".json" and read_sample(path, 4096)[0].decode(enc, "ignore").lstrip("\ufeff \t\r\n").startswith("["):
        yield from _read_array(path, enc, opts)
        return
    if ascii_compatible(enc):
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                yield _parse(raw, str(lineno), opts, enc)
        return
    # UTF-16/32: lines can only be found after decoding.
    with open(path, "rb") as fb, io.TextIOWrapper(fb, encoding=enc, errors="strict", newline=None) as f:
        lineno = 0
        while True:
            try:
                text = f.readline()
            except UnicodeDecodeError as exc:
                yield BadRecord(str(lineno + 1), "encoding_error", f"not valid {enc} ({exc.reason}); rest of file unread")
                return
            if not text:
                return
            lineno += 1
            if text.strip():
                yield _parse(text.lstrip("\ufeff"), str(lineno), opts, enc)
