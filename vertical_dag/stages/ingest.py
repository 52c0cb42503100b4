"""Ingest: every file under data/raw/<source>/ becomes one Parquet part of documents plus one ledger part.

Every folder under data/raw/ is a source; params `ingest.sources` only change how one is read. The stage is
incremental: state.json keeps each file's fingerprint (size, mtime_ns, sha256; the hash is recomputed only
when size or mtime moved), so a re-run reads only new or changed files, replaces the part of a changed file
and deletes the parts of a removed one. Changed ingest params re-read everything (the parts depend on them).
Every input record ends up either as a row or as a ledger row naming its file and line/row.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ..params import IngestParams
from ..records import (
    DOC_SCHEMA,
    LedgerEntry,
    atomic_path,
    file_fingerprint,
    ledger_table,
    make_doc_id,
    read_json,
    write_json,
    write_parquet,
)
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

STAGE = "ingest"
STATE_VERSION = 1  # bump when the part layout changes: every file is re-read
FLUSH_ROWS = 8192
FLUSH_CHARS = 8 << 20  # bounds memory: ~8 M characters of text buffered per part at a time
EXAMPLES = 5


def part_name(rel: str) -> str:
    """Filesystem-safe, stable name for a raw file's part: readable prefix + hash of the exact relative path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.replace("/", "__")).strip("._")[:100] or "file"
    return f"{safe}-{hashlib.blake2b(rel.encode(), digest_size=4).hexdigest()}"


def scan_raw(raw: Path) -> dict[str, Path]:
    """Raw files by path relative to data/raw (hidden files and SQLite journals are not documents).

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
                path.name.endswith(SIDECAR_SUFFIXES):
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

    def __init__(self, path: Path, source: str, batch: str) -> None:
        self.path, self.source, self.batch = path, source, batch
        self.writer = pq.ParquetWriter(path, DOC_SCHEMA, compression="zstd")
        self.cols: dict[str, list] = {"doc_id": [], "uri": [], "text": [], "meta": []}
        self.chars = 0
        self.rows = 0

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
        table = pa.table(
            {
                "doc_id": pa.array(self.cols["doc_id"], pa.string()),
                "source": pa.array([self.source] * n, pa.string()),
                "uri": pa.array(self.cols["uri"], pa.string()),
                "batch": pa.array([self.batch] * n, pa.string()),
                "text": pa.array(self.cols["text"], pa.large_string()),
                "lang": pa.nulls(n, pa.string()),
                "meta": pa.array(self.cols["meta"], pa.string()),
            },
            schema=DOC_SCHEMA,
        )
        self.writer.write_table(table)
        self.rows += n
        self.cols = {k: [] for k in self.cols}
        self.chars = 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


@dataclass
class FileResult:
    documents: int = 0
    quarantined: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    format: str = ""


def ingest_file(path: Path, rel: str, source: str, p: IngestParams, part: Path, ledger: Path, log: Any) -> FileResult:
    """Read one raw file into its part + ledger part (both replaced atomically). Never raises on bad input."""
    declared, opts = read_options(p, source)
    result = FileResult()
    entries: list[LedgerEntry] = []

    def quarantine(doc_id: str, reason: str, location: str, detail: str, ref: str | None = None) -> None:
        entries.append(LedgerEntry(doc_id, STAGE, "quarantined", reason, f"{where(rel, location)}: {detail}", ref))
        result.quarantined[reason] += 1
        ex = result.examples.setdefault(reason, [])
        if len(ex) < EXAMPLES:
            ex.append(doc_id)

    file_id = make_doc_id(source, f"{rel}#file")
    seen: dict[str, tuple[str, str]] = {}  # record key -> (doc_id, location) of its first occurrence
    size = path.stat().st_size
    records = 0
    with atomic_path(part) as tmp:
        writer = PartWriter(tmp, source, rel)
        try:
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
            result.format = detect_format(path, declared)
            for rec in read(path, opts, result.format):
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
                               f"id {rec.key!r} already used at {first_loc}", ref=first_id)
                    continue
                seen[rec.key] = (doc_id, rec.location)
                if len(rec.text) > p.max_doc_chars:
                    quarantine(doc_id, "too_long", rec.location, f"{len(rec.text)} chars > max_doc_chars {p.max_doc_chars}")
                elif len(rec.text.strip()) < p.min_doc_chars:
                    quarantine(doc_id, "too_short", rec.location, f"{len(rec.text.strip())} chars < min_doc_chars {p.min_doc_chars}")
                else:
                    if resolved is not None:
                        rec.meta["resolved_path"] = str(resolved)
                    writer.add(doc_id, rec.uri or where(rel, rec.location), rec.text, meta_json(rec.meta))
            if records == 0:
                raise FileRejected("empty_file", "no records")
        except FileRejected as exc:
            quarantine(file_id, exc.reason, "", exc.detail)
        except Exception as exc:  # a reader bug or an unreadable file must not stop the batch
            quarantine(file_id, "read_error", "", f"after {records} records: {type(exc).__name__}: {exc}"[:500])
        writer.close()
        result.documents = writer.rows
    if entries:
        write_parquet(ledger_table(entries), ledger)
    else:
        ledger.unlink(missing_ok=True)
    return result


def fingerprint(path: Path, old: dict | None) -> dict[str, Any]:
    try:
        return file_fingerprint(path, old)
    except OSError:  # unreadable: read it anyway, so the failure becomes a ledger row (read_error)
        st = path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": "unreadable"}


def params_fingerprint(p: IngestParams) -> str:
    return hashlib.sha256(f"{STATE_VERSION}\x00{p.model_dump_json()}".encode()).hexdigest()[:16]


def run(ctx: StageContext) -> dict[str, Any]:
    started = time.perf_counter()
    p = ctx.params.ingest
    parts_dir, ledger_dir = ctx.out / "parts", ctx.ledger_dir
    parts_dir.mkdir(parents=True, exist_ok=True)
    ledger_dir.mkdir(parents=True, exist_ok=True)
    state_path = ctx.out / "state.json"
    state = read_json(state_path, default=None) or {}
    pfp = params_fingerprint(p)
    rebuilt = bool(state) and state.get("params") != pfp
    if rebuilt:
        ctx.log.info("ingest params (or the part layout) changed since the last run: re-reading every file")
    previous: dict[str, dict] = dict(state.get("files", {}))
    known: dict[str, dict] = {} if rebuilt else dict(previous)

    files = scan_raw(ctx.project.raw)
    removed = sorted(set(previous) - set(files))
    for rel in removed:
        entry = previous[rel]
        known.pop(rel, None)
        (parts_dir / f"{entry['part']}.parquet").unlink(missing_ok=True)
        (ledger_dir / f"{entry['part']}.parquet").unlink(missing_ok=True)
        ctx.log.info("removed %s: its %d documents and %d ledger rows are gone", rel, entry["documents"], sum(entry["quarantined"].values()))

    todo: list[tuple[str, Path, dict, bool]] = []  # (rel, path, fingerprint, is_new)
    unchanged = 0
    for rel, path in files.items():
        old = known.get(rel)
        fp = fingerprint(path, old)
        name = part_name(rel)
        if old and old["sha256"] == fp["sha256"] and (parts_dir / f"{name}.parquet").exists():
            old.update(size=fp["size"], mtime_ns=fp["mtime_ns"])  # touched but same bytes
            unchanged += 1
        else:
            todo.append((rel, path, fp, rel not in previous))

    state = {"version": STATE_VERSION, "params": pfp, "files": known}
    bytes_read = sum(fp["size"] for _, _, fp, _ in todo)
    read_started = time.perf_counter()
    last_save = read_started
    docs_read = 0
    bar = tqdm(total=bytes_read, unit="B", unit_scale=True, desc="ingest", file=sys.stderr, disable=None, mininterval=1.0)
    for rel, path, fp, is_new in todo:
        source = rel.split("/", 1)[0] if "/" in rel else ""
        name = part_name(rel)
        t0 = time.perf_counter()
        if not source:
            res = _loose_file(rel, ledger_dir / f"{name}.parquet", parts_dir / f"{name}.parquet")
        else:
            res = ingest_file(path, rel, source, p, parts_dir / f"{name}.parquet", ledger_dir / f"{name}.parquet", ctx.log)
        docs_read += res.documents
        known[rel] = {**fp, "source": source, "part": name, "format": res.format, "documents": res.documents,
                      "quarantined": dict(res.quarantined), "examples": res.examples}
        bar.update(fp["size"])
        log = ctx.log.info if len(todo) <= 50 or res.quarantined else ctx.log.debug
        log("%s %s: %d documents, %d quarantined%s (%.1f MB in %.1f s)", "new" if is_new else "changed", rel, res.documents,
            sum(res.quarantined.values()), f" {dict(res.quarantined)}" if res.quarantined else "", fp["size"] / 2**20,
            time.perf_counter() - t0)
        if time.perf_counter() - last_save > 5:  # a crash loses at most a few seconds of reading
            write_json(state, state_path)
            last_save = time.perf_counter()
    bar.close()
    read_seconds = time.perf_counter() - read_started
    _remove_orphans(parts_dir, ledger_dir, {e["part"] for e in known.values()})
    write_json(state, state_path)
    metrics = _metrics(known, files_total=len(files), new=sum(1 for t in todo if t[3]), changed=sum(1 for t in todo if not t[3]),
                       removed=len(removed), unchanged=unchanged, bytes_read=bytes_read, read_seconds=read_seconds,
                       docs_read=docs_read, rebuilt=rebuilt)
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    q = metrics["quarantined_by_reason"]
    ctx.log.info(
        "ingest: %d documents kept from %d files (%d new, %d changed, %d removed, %d unchanged); %d quarantined%s; read %.1f MB at %.1f MB/s",
        metrics["documents_out"], len(files), metrics["files_new"], metrics["files_changed"], len(removed), unchanged,
        metrics["quarantined"], f" ({', '.join(f'{k}: {v}' for k, v in q.items())})" if q else "", bytes_read / 2**20,
        metrics["mb_per_s"],
    )
    return metrics


def _loose_file(rel: str, ledger: Path, part: Path) -> FileResult:
    """A file directly under data/raw/ belongs to no source: quarantined so it is not silently ignored."""
    doc_id = make_doc_id("", f"{rel}#file")
    write_parquet(ledger_table([LedgerEntry(doc_id, STAGE, "quarantined", "no_source_folder",
                                            f"{rel}: put raw files in data/raw/<source>/")]), ledger)
    write_parquet(DOC_SCHEMA.empty_table(), part)
    return FileResult(quarantined=Counter(no_source_folder=1), examples={"no_source_folder": [doc_id]})


def _remove_orphans(parts_dir: Path, ledger_dir: Path, names: set[str]) -> None:
    """Parts no file in the state owns, and temporaries, left by an interrupted run or an older layout."""
    for folder in (parts_dir, ledger_dir):
        for f in folder.glob("*.parquet"):
            if f.stem not in names:
                f.unlink()
        for f in folder.glob(".*.tmp"):
            f.unlink(missing_ok=True)


def _metrics(files: dict[str, dict], *, files_total: int, new: int, changed: int, removed: int, unchanged: int,
             bytes_read: int, read_seconds: float, docs_read: int, rebuilt: bool) -> dict[str, Any]:
    by_reason: Counter = Counter()
    examples: dict[str, list[str]] = {}
    by_source: Counter = Counter()
    by_format: Counter = Counter()
    for entry in files.values():
        by_reason.update(entry["quarantined"])
        by_source[entry["source"] or "(none)"] += entry["documents"]
        by_format[entry["format"] or "(unread)"] += 1
        for reason, ids in entry.get("examples", {}).items():
            ex = examples.setdefault(reason, [])
            ex.extend(ids[: EXAMPLES - len(ex)])
    out = sum(e["documents"] for e in files.values())
    quarantined = sum(by_reason.values())
    by_reason_sorted = dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "documents_in": out + quarantined,
        "documents_out": out,
        "dropped": 0,
        "quarantined": quarantined,
        "drops_by_reason": by_reason_sorted,
        "quarantined_by_reason": by_reason_sorted,
        "examples_by_reason": dict(sorted(examples.items())),
        "documents_by_source": dict(sorted(by_source.items())),
        "files_by_format": dict(sorted(by_format.items())),
        "files_total": files_total,
        "files_new": new,
        "files_changed": changed,
        "files_removed": removed,
        "files_skipped_unchanged": unchanged,
        "new_parts": new + changed,
        "rebuilt": rebuilt,
        "documents_read": docs_read,
        "bytes_read": bytes_read,
        "mb_per_s": round(bytes_read / 2**20 / read_seconds, 2) if read_seconds > 0 and bytes_read else 0.0,
        "docs_per_s": round(docs_read / read_seconds, 1) if read_seconds > 0 and docs_read else 0.0,
    }


def part_state(out: Path) -> dict[str, Any]:
    """The ingest bookkeeping (for other stages and tools): {relpath: {part, sha256, documents, ...}}."""
    return (read_json(out / "state.json", default={}) or {}).get("files", {})


__all__ = ["run", "part_name", "scan_raw", "ingest_file", "part_state"]
