"""Compressed files (.gz, .bz2, .xz, .zst) and archives (.zip, .tar, .tar.gz/.tgz/.tar.bz2/.tar.xz/.tar.zst).

A compressed file is the file inside it: `laws.jsonl.gz` is read as `laws.jsonl` (same keys, same locations).
An archive is read member by member: each member is decompressed as a stream into a private temporary file
(under a name of ours, so a member path can never write anywhere) and read by the reader its name calls
for; its records are located as `archive!member:location` and keyed per member. Members that are unsafe
(absolute or `..` paths, links, devices), of an unknown kind, encrypted or unreadable are bad records one by
one; an archive inside an archive is read the same way, up to MAX_DEPTH levels.

Limits against archive bombs, counted while decompressing (never trusting sizes the archive declares):
`archive_max_members`, `archive_max_bytes` for everything one raw file expands to, and
`archive_max_ratio` (expanded / compressed size, checked once a member is past 1 MiB).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import zstandard

from .base import BadRecord, FileRejected, RawRecord, ReadOptions, Record, position_key

MAX_DEPTH = 3
CHUNK = 1 << 20
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".zst": None}
TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".tzst")
_STREAM_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError, tarfile.TarError,
                  zipfile.BadZipFile, RuntimeError, NotImplementedError)


class LimitExceeded(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class Budget:
    """Bytes left to expand for one raw file (shared by nested archives), and the limits."""

    bytes_left: int
    max_ratio: float
    max_members: int

    @classmethod
    def of(cls, opts: ReadOptions) -> Budget:
        return cls(opts.archive_max_bytes, opts.archive_max_ratio, opts.archive_max_members)


def container_kind(name: str) -> str | None:
    """'tar', 'zip' or 'compressed' for a file name that is one, else None."""
    lower = name.lower()
    if lower.endswith(TAR_SUFFIXES):
        return "tar"
    if lower.endswith(".zip"):
        return "zip"
    if Path(lower).suffix in COMPRESSED:
        return "compressed"
    return None


def _open_stream(path: Path, suffix: str) -> BinaryIO:
    if suffix == ".zst":
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return COMPRESSED[suffix](path, "rb")


def _copy(src: BinaryIO, dst: BinaryIO, compressed: int, budget: Budget, name: str) -> int:
    written = 0
    while chunk := src.read(CHUNK):
        written += len(chunk)
        if written > budget.bytes_left:
            raise LimitExceeded("archive_too_large", f"{name}: expands past archive_max_bytes "
                                f"({budget.bytes_left + written - len(chunk)} bytes were left); not read")
        if written > CHUNK and written > budget.max_ratio * max(compressed, 1):
            raise LimitExceeded("archive_ratio", f"{name}: expands more than archive_max_ratio {budget.max_ratio:g}x "
                                f"({compressed} compressed bytes gave over {written}); not read (an archive bomb?)")
        dst.write(chunk)
    budget.bytes_left -= written
    return written


@contextmanager
def _extracted(src: BinaryIO, name: str, compressed: int, budget: Budget) -> Iterator[Path]:
    """`src` decompressed into a temporary file that keeps the member's base name (readers look at suffixes)."""
    tmp = Path(tempfile.mkdtemp(prefix="vdag-member-"))
    try:
        base = PurePosixPath(name.replace("\\", "/")).name.lstrip(".") or "member"
        target = tmp / base[-120:]  # the end keeps the suffixes the reader is chosen by
        with open(target, "wb") as dst:
            _copy(src, dst, compressed, budget, name)
        yield target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_inner(path: Path, name: str, opts: ReadOptions, budget: Budget, depth: int) -> Iterator[Record]:
    """Records of one decompressed file called `name` (FileRejected when it cannot be read at all)."""
    from . import READERS, detect_format

    kind = container_kind(name)
    if kind is not None:
        if depth >= MAX_DEPTH:
            raise FileRejected("nested_too_deep", f"an archive nested more than {MAX_DEPTH} levels deep; not read")
        yield from CONTAINERS[kind](path, opts, budget, depth + 1)
        return
    if path.stat().st_size == 0:
        raise FileRejected("empty_file", "0 bytes")
    yield from READERS[detect_format(name, opts.member_format, path, opts.encodings)](path, opts)


def _member_records(path: Path, member: str, opts: ReadOptions, budget: Budget, depth: int) -> Iterator[Record]:
    """Records of one archive member, relocated under `!member`; every failure is a bad record of its own."""
    loc = f"!{member}"
    n = 0
    try:
        for rec in _read_inner(path, member, opts, budget, depth):
            n += 1
            inner_loc = rec.location if rec.location.startswith("!") else f":{rec.location}" if rec.location else ""
            key = rec.key if isinstance(rec, RawRecord) else rec.key or position_key(rec.location)
            rec.location, rec.key = loc + inner_loc, f"{member}!{key}"
            yield rec
        if n == 0:
            yield BadRecord(loc, "empty_file", f"member {member}: no records", key=f"{member}!doc")
    except FileRejected as exc:
        yield BadRecord(loc, exc.reason, f"member {member}: {exc.detail}", key=f"{member}!doc")
    except LimitExceeded:
        raise
    except Exception as exc:  # one broken member never costs the others
        yield BadRecord(loc, "read_error", f"member {member}, after {n} records: {type(exc).__name__}: {exc}"[:500],
                        key=f"{member}!doc")


def unsafe_member(name: str) -> str | None:
    """Why a member path is refused (absolute, or climbing out with ..), else None."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        return "an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "a path that climbs out of the archive (..)"
    return None


def _member(name: str, is_file: bool, open_member: Callable[[], BinaryIO], compressed: int, opts: ReadOptions,
            budget: Budget, depth: int) -> Iterator[Record]:
    loc, key = f"!{name}", f"{name}!doc"
    why = unsafe_member(name) if is_file else "not a regular file (a link or device)"
    if why is not None:
        yield BadRecord(loc, "unsafe_member", f"member {name}: {why}; not read", key=key)
        return
    try:
        with open_member() as src, _extracted(src, name, compressed, budget) as tmp:
            yield from _member_records(tmp, name, opts, budget, depth)
    except LimitExceeded as exc:
        yield BadRecord(loc, exc.reason, exc.detail, key=key)
    except _STREAM_ERRORS as exc:
        yield BadRecord(loc, "corrupt_member", f"member {name}: {type(exc).__name__}: {exc}"[:500], key=key)


def read_zip(path: Path, opts: ReadOptions, budget: Budget | None = None, depth: int = 1) -> Iterator[Record]:
    budget = budget or Budget.of(opts)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FileRejected("corrupt_archive", f"not a readable zip: {exc}") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > budget.max_members:
            raise FileRejected("too_many_members", f"{len(members)} members > archive_max_members {budget.max_members}")
        budget.max_members -= len(members)
        for m in members:
            if m.flag_bits & 0x1:
                yield BadRecord(f"!{m.filename}", "encrypted_member", f"member {m.filename}: encrypted; not read",
                                key=f"{m.filename}!doc")
                continue
            is_link = (m.external_attr >> 28) == 0o12  # a symlink stored by Info-ZIP
            yield from _member(m.filename, not is_link, lambda m=m: zf.open(m), m.compress_size, opts, budget, depth)


def read_tar(path: Path, opts: ReadOptions, budget: Budget | None = None, depth: int = 1) -> Iterator[Record]:
    budget = budget or Budget.of(opts)
    raw = (zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
           if path.name.lower().endswith((".zst", ".tzst")) else open(path, "rb"))
    size, count = path.stat().st_size, 0
    try:
        tf = tarfile.open(fileobj=raw, mode="r|*")  # a stream: members in order, never a seek back
    except _STREAM_ERRORS as exc:
        raw.close()
        raise FileRejected("corrupt_archive", f"not a readable tar: {type(exc).__name__}: {exc}") from None
    with raw, tf:
        try:
            for m in tf:
                if m.isdir():
                    continue
                count += 1
                if count > budget.max_members:
                    yield BadRecord(f"!{m.name}", "too_many_members", f"members from {m.name} on not read: more than "
                                    f"archive_max_members {budget.max_members}", key=f"{m.name}!doc")
                    return
                # Members share one compressed stream: a member's ratio is taken against the whole archive.
                yield from _member(m.name, m.isfile(), lambda m=m: tf.extractfile(m), size, opts, budget, depth)
        except _STREAM_ERRORS as exc:
            yield BadRecord(f"!(after member {count})", "corrupt_archive",
                            f"{type(exc).__name__}: {exc}; members after the {count}th not read", key=f"#{count}!rest")


def read_compressed(path: Path, opts: ReadOptions, budget: Budget | None = None, depth: int = 1) -> Iterator[Record]:
    """A single compressed file: the records of the file inside, as if it were not compressed."""
    budget = budget or Budget.of(opts)
    inner = path.name[: -len(path.suffix)]
    try:
        with _open_stream(path, path.suffix.lower()) as src, _extracted(src, inner, path.stat().st_size, budget) as tmp:
            yield from _read_inner(tmp, inner, opts, budget, depth)
    except LimitExceeded as exc:
        raise FileRejected(exc.reason, exc.detail) from None
    except _STREAM_ERRORS as exc:
        raise FileRejected("corrupt_archive", f"{type(exc).__name__}: {exc}"[:300]) from None


CONTAINERS = {"zip": read_zip, "tar": read_tar, "compressed": read_compressed}
