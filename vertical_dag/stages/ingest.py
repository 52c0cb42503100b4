"""Ingest: every file under data/raw/<source>/ becomes one Parquet part of documents plus one ledger part
(and the gate's profile of the part: quality/part_profile.py).

Every folder under data/raw/ is a source; params `ingest.sources` only change how one is read. Incremental
through the part-stage core (stages/parts.py): a re-run reads only new or changed files, replaces the part of
a changed file and deletes the parts of a removed one; changed ingest params re-read everything. Every input
record ends up either as a row or as a ledger row naming its file and line/row. A file that cannot be read
at all (permissions, I/O error) is quarantined for this run and read again on the next.

Arrival order: each file gets a number the first time it is seen (new files of one run in name order) and
keeps it; it travels in the part's Parquet metadata, so dedup decides in arrival order whether a batch
arrived incrementally or the whole folder is processed from scratch.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..params import IngestParams
from ..quality import part_profile
from ..records import DOC_SCHEMA, LedgerEntry, atomic_path, ledger_table, make_doc_id, write_parquet
from ..sources import (
    SIDECAR_SUFFIXES,
    BadRecord,
    FileRejected,
    ReadOptions,
    detect_format,
    meta_json,
    read,
    where,
)
from ..sources.base import position_key
from .context import StageContext
from .executor import make_executor
from .inputs import code_digest
from .parts import PartResult, PartStore, Unit, fingerprint_settings, raise_failures, run_units
from .progress import Progress

STAGE = "ingest"
STATE_VERSION = 2  # bump when the part layout changes: every file is re-read
FLUSH_ROWS = 8192
FLUSH_CHARS = 8 << 20  # bounds memory: ~8 M characters of text buffered per part at a time
ARRIVAL_KEY = b"vertical_dag.arrival"


def part_name(rel: str) -> str:
    """Filesystem-safe, stable name for a raw file's part: readable prefix + hash of the exact relative path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.replace("/", "__")).strip("._")[:100] or "file"
    return f"{safe}-{hashlib.blake2b(rel.encode(), digest_size=4).hexdigest()}"


DVC_METAFILE = ".dvc"  # data/raw/<source>.dvc of `dvc import-url URL data/raw/<source>` (or `dvc add`)


def scan_raw(raw: Path) -> dict[str, Path]:
    """Raw files by path relative to data/raw (hidden files, SQLite journals and DVC's .dvc metafiles are not
    documents).

    Symlinks: a linked file is read (when it leads outside the project only if
    ingest.follow_external_symlinks allows it, see ingest_file); a linked folder is not walked, it is listed
    so that ingest quarantines it with a hint instead of skipping it silently."""
    if not raw.exists():
        return {}
    files = {}
    for path in raw.rglob("*"):
        rel = path.relative_to(raw)
        linked_folder = path.is_symlink() and path.is_dir()  # not walked: it becomes one ledger row
        if any(part.startswith(".") for part in rel.parts) or not (path.is_file() or linked_folder) or \
                path.name.endswith((*SIDECAR_SUFFIXES, DVC_METAFILE)):
            continue
        files[rel.as_posix()] = path
    return dict(sorted(files.items()))


def external_target(path: Path, rel: str) -> Path | None:
    """Where `path` really is when a symlink (of the file or a folder above it) leads outside the project."""
    raw = path.parents[rel.count("/")]  # data/raw
    project = raw.parent.parent.resolve()
    target = path.resolve()
    return None if target.is_relative_to(project) else target


def read_options(p: IngestParams, source: str) -> tuple[str, ReadOptions]:
    sp = p.source(source)
    opts = ReadOptions(
        text_field=sp.text_field, id_field=sp.id_field, meta_fields=tuple(sp.meta_fields) if sp.meta_fields is not None else None,
        query=sp.query, csv_delimiter=sp.csv_delimiter, encodings=tuple(p.encodings), max_doc_chars=p.max_doc_chars,
        member_format=sp.format, pdf_unit=sp.pdf_unit, sheet_unit=sp.sheet_unit,
        text_columns=tuple(sp.text_columns) if sp.text_columns is not None else None,
        archive_max_members=p.archive_max_members, archive_max_bytes=int(p.archive_max_mb * 2**20),
        archive_max_ratio=p.archive_max_ratio,
    )
    return sp.format, opts


class PartWriter:
    """Documents of one raw file streamed into a Parquet part in chunks (never the whole file in memory)."""

    def __init__(self, path: Path, source: str, batch: str, arrival: int) -> None:
        self.source, self.batch = source, batch
        schema = DOC_SCHEMA.with_metadata({ARRIVAL_KEY: str(arrival).encode()})
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.cols: dict[str, list] = {"doc_id": [], "uri": [], "text": [], "meta": []}
        self.chars = 0
        self.rows = 0
        self.profile: list[pa.Table] = []  # the gate's measures of each chunk (quality/part_profile.py)

    def add(self, doc_id: str, uri: str, text: str, meta: str | None) -> None:
        c = self.cols
        c["doc_id"].append(doc_id)
        c["uri"].append(uri)
        c["text"].append(text)
        c["meta"].append(meta)
        self.chars += len(text)
        if len(c["doc_id"]) >= FLUSH_ROWS or self.chars >= FLUSH_CHARS:
            self.flush()

    def flush(self) -> None:
        n = len(self.cols["doc_id"])
        if not n:
            return
        table = pa.table({
            "doc_id": pa.array(self.cols["doc_id"], pa.string()),
            "source": pa.array([self.source] * n, pa.string()),
            "uri": pa.array(self.cols["uri"], pa.string()),
            "batch": pa.array([self.batch] * n, pa.string()),
            "text": pa.array(self.cols["text"], pa.large_string()),
            "lang": pa.nulls(n, pa.string()),
            "meta": pa.array(self.cols["meta"], pa.string()),
        }, schema=DOC_SCHEMA)
        self.writer.write_table(table)
        self.profile.append(part_profile.measure(table.column("doc_id"), table.column("text")))
        self.rows += n
        self.cols = {k: [] for k in self.cols}
        self.chars = 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


def arrival_of(part: Path) -> float:
    """A part's arrival number (from its Parquet metadata; parts of older layouts sort last)."""
    meta = pq.read_schema(part).metadata or {}
    return int(meta[ARRIVAL_KEY]) if ARRIVAL_KEY in meta else float("inf")


def _read_records(path: Path, rel: str, source: str, p: IngestParams, writer: PartWriter, result: PartResult,
                  quarantine: Any, log: Any, resolved: Path | None = None) -> int:
    """Stream the file's records into the writer; bad ones into the ledger. Returns the records read."""
    declared, opts = read_options(p, source)
    seen: dict[str, tuple[str, str]] = {}  # record key -> (doc_id, location) of its first occurrence
    result.extra["format"] = detect_format(path, declared, path, opts.encodings)
    records = 0
    for rec in read(path, opts, result.extra["format"]):
        records += 1
        if records % 100_000 == 0:
            log.info("%s: %d records", rel, records)
        if isinstance(rec, BadRecord):
            quarantine(make_doc_id(source, f"{rel}#{rec.key or position_key(rec.location)}"), rec.reason, rec.location, rec.detail)
            continue
        doc_id = make_doc_id(source, f"{rel}#{rec.key}")
        if rec.key in seen:
            first_id, first_loc = seen[rec.key]
            quarantine(make_doc_id(source, f"{rel}#{position_key(rec.location)}"), "duplicate_id", rec.location,
                       f"id {rec.key!r} already used at {first_loc}", first_id)
            continue
        seen[rec.key] = (doc_id, rec.location)
        if len(rec.text) > p.max_doc_chars:
            quarantine(doc_id, "too_long", rec.location, f"{len(rec.text)} chars > max_doc_chars {p.max_doc_chars}")
        elif len(rec.text.strip()) < p.min_doc_chars:
            quarantine(doc_id, "too_short", rec.location, f"{len(rec.text.strip())} chars < min_doc_chars {p.min_doc_chars}")
        else:
            if resolved is not None:  # followed a link out of the project: say where the text really was
                rec.meta["resolved_path"] = str(resolved)
            writer.add(doc_id, rec.uri or where(rel, rec.location), rec.text, meta_json(rec.meta))
    return records


def ingest_file(path: Path, rel: str, source: str, p: IngestParams, part: Path, ledger: Path, log: Any,
                arrival: int = 0, profile: Path | None = None) -> PartResult:
    """Read one raw file into its part + ledger part (both replaced atomically), and the part's gate profile
    into `profile` when given. Never raises on bad input."""
    result = PartResult(extra={"source": source, "format": "", "arrival": arrival})
    entries: list[LedgerEntry] = []

    def quarantine(doc_id: str, reason: str, location: str, detail: str, ref: str | None = None) -> None:
        entries.append(LedgerEntry(doc_id, STAGE, "quarantined", reason, f"{where(rel, location)}: {detail}", ref))
        result.quarantined.add(reason, doc_id)

    file_id = make_doc_id(source, f"{rel}#file")
    records = 0
    with atomic_path(part) as tmp:
        writer = PartWriter(tmp, source, rel, arrival)
        try:
            size = path.stat().st_size
            if not source:
                raise FileRejected("no_source_folder", "put raw files in data/raw/<source>/")
            if size > p.max_file_mb * 1024 * 1024:
                raise FileRejected("file_too_large", f"{size / 2**20:.1f} MB > max_file_mb {p.max_file_mb}")
            if path.is_dir():
                raise FileRejected("symlinked_folder", f"a symlink to the folder {path.resolve()}, which is not walked: "
                                   "copy or link the files themselves into data/raw/<source>/")
            if size == 0:
                raise FileRejected("empty_file", "0 bytes")
            resolved = external_target(path, rel)
            if resolved is not None and not p.follow_external_symlinks:
                raise FileRejected("external_symlink", f"a symlink to {resolved}, outside the project; not read "
                                   "(set ingest.follow_external_symlinks: true to read such links)")
            records = _read_records(path, rel, source, p, writer, result, quarantine, log, resolved)
            if records == 0:
                raise FileRejected("empty_file", "no records")
        except FileRejected as exc:
            quarantine(file_id, exc.reason, "", exc.detail)
        except OSError as exc:  # unreadable now (permissions, I/O): quarantined, and read again next run
            quarantine(file_id, "unreadable", "", f"{type(exc).__name__}: {exc}; it is read again on the next run")
            result.retry = True
        except Exception as exc:  # a reader bug must not stop the batch
            quarantine(file_id, "read_error", "", f"after {records} records: {type(exc).__name__}: {exc}"[:500])
        writer.close()
    result.documents_out = writer.rows
    result.documents_in = writer.rows + result.quarantined.total()
    write_parquet(ledger_table(entries), ledger)
    if profile is not None:
        part_profile.write_sidecar(profile, part_profile.concat(writer.profile, EMPTY_PROFILE), part, PROFILE_SETTINGS)
    return result


PROFILE_SETTINGS = part_profile.settings(None)  # ingest's gate looks for no PII
EMPTY_PROFILE = part_profile.measure(pa.array([], pa.string()), pa.array([], pa.large_string()))


@dataclass(frozen=True)
class _Work:
    """The per-file work, picklable for the process pool and Ray."""

    params: IngestParams
    parts_dir: Path
    ledger_dir: Path
    profile_dir: Path
    arrival: dict[str, int]

    def __call__(self, unit: Unit) -> PartResult:
        import logging

        source = unit.key.split("/", 1)[0] if "/" in unit.key else ""
        return ingest_file(unit.path, unit.key, source, self.params, self.parts_dir / f"{unit.part}.parquet",
                           self.ledger_dir / f"{unit.part}.parquet", logging.getLogger("vertical_dag.ingest"),
                           self.arrival[unit.key], self.profile_dir / f"{unit.part}.parquet")


def _arrivals(store: PartStore, keys: list[str]) -> dict[str, int]:
    """Each file's arrival number: kept from the first time it was seen (also across rebuilds)."""
    known = dict(store.state.get("arrival", {}))
    nxt = max(known.values(), default=-1) + 1
    for key in keys:  # in name order
        if key not in known:
            known[key], nxt = nxt, nxt + 1
    return known


def run(ctx: StageContext) -> dict[str, Any]:
    p = ctx.params.ingest
    store = PartStore(ctx.out, fingerprint_settings(STATE_VERSION, p.model_dump(), code_digest(STAGE)), ctx.log, version=STATE_VERSION)
    files = scan_raw(ctx.project.raw)
    arrival = _arrivals(store, list(files))
    plan = store.plan(Unit(rel, path, part_name(rel)) for rel, path in files.items())
    for d in (store.parts_dir, store.ledger_dir):
        d.mkdir(parents=True, exist_ok=True)
    total = sum(u.path.stat().st_size for u in plan.todo)
    bar = Progress(ctx.log, "ingest: read", total / 2**20, "MB")

    def progress(unit: Unit, res: PartResult) -> None:
        bar.update(unit.path.stat().st_size / 2**20)
        log = ctx.log.info if len(plan.todo) <= 50 or res.quarantined.total() else ctx.log.debug
        log("%s: %d documents, %d quarantined%s", unit.key, res.documents_out, res.quarantined.total(),
            f" {dict(res.quarantined.counts)}" if res.quarantined.total() else "")

    work = _Work(p, store.parts_dir, store.ledger_dir, store.profile_dir, arrival)
    executor = make_executor(ctx.params.execution, len(plan.todo), total, ctx.project.data)
    started = time.perf_counter()
    try:
        failed = run_units(store, plan.todo, work, executor, progress=progress)
    finally:
        executor.close()
    seconds = time.perf_counter() - started
    bar.close()
    store.state["arrival"] = arrival
    store.save()
    raise_failures(STAGE, failed)
    return _metrics(store, plan, files_total=len(files), bytes_read=total, seconds=seconds, workers=executor.workers)


def _metrics(store: PartStore, plan: Any, *, files_total: int, bytes_read: int, seconds: float,
             workers: int) -> dict[str, Any]:
    by_source: dict[str, int] = {}
    by_format: dict[str, int] = {}
    for e in store.units.values():
        by_source[e["source"] or "(none)"] = by_source.get(e["source"] or "(none)", 0) + e["documents_out"]
        by_format[e["format"] or "(unread)"] = by_format.get(e["format"] or "(unread)", 0) + 1
    totals = store.totals()
    return {
        **totals,
        "quarantined_by_reason": totals["drops_by_reason"],
        "documents_by_source": dict(sorted(by_source.items())),
        "files_by_format": dict(sorted(by_format.items())),
        "files_total": files_total,
        "files_new": plan.new,
        "files_changed": len(plan.todo) - plan.new,
        "files_removed": len(plan.removed),
        "files_skipped_unchanged": len(plan.unchanged),
        "new_parts": len(plan.todo),
        "documents_read": sum(store.units[u.key]["documents_out"] for u in plan.todo if u.key in store.units),
        "rebuilt": plan.rebuild,
        "workers": workers,
        "bytes_read": bytes_read,
        "mb_per_s": round(bytes_read / 2**20 / seconds, 3) if seconds > 0 and bytes_read else 0.0,
        "seconds": round(seconds, 3),
    }


__all__ = ["run", "part_name", "scan_raw", "ingest_file", "arrival_of", "ARRIVAL_KEY"]
