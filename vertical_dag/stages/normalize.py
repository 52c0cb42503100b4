"""Normalize: each deduplicated part -> a cleaned, PII-redacted, quality-filtered part of the same name.

Input: data/deduplicated/parts/*.parquet (documents + cluster_id / canonical_hash). Output:
data/normalized/parts/<same name>.parquet with `lang` set and a `pii_count` column, and
data/normalized/ledger/<same name>.parquet with a `dropped` row (reason) per removed document and a
`redacted` row (counts per type) per kept document that had PII, and data/normalized/profile/<same name>.parquet,
what the gate reads instead of the texts (quality/part_profile.py: lengths, languages, PII the gate's detector
still finds).

Incremental through the part-stage core (stages/parts.py): only new or changed parts are processed (on every
core, or on Ray: params `execution`; a part larger than PIECE_BYTES is cut into pieces of row groups that run
on several workers and are merged in order, into the same bytes), a vanished part's output is removed, and a
change of the normalize params (or the project domain, which picks the preset) rebuilds everything.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..params import NormalizeParams, Params
from ..quality import part_profile
from ..quality.profile import pii_detector, pii_settings
from ..records import LedgerEntry, atomic_path, ledger_table, list_parts, write_parquet
from ..text.clean import CleanOptions
from ..text.normalizer import DocResult, Normalizer, NormalizerConfig
from ..text.quality import resolve_thresholds
from .context import StageContext
from .executor import make_executor
from .inputs import code_digest
from .parts import PartResult, PartStore, Unit, fingerprint_settings, raise_failures, run_units
from .progress import Progress

STAGE = "normalize"
STATE_VERSION = 2


def preset_name(params: Params) -> str:
    p = params.normalize
    return params.project.domain if p.preset == "auto" else p.preset


def normalizer_config(params: Params) -> NormalizerConfig | None:
    """None when normalize.enabled is false: documents then pass through unchanged."""
    p: NormalizeParams = params.normalize
    if not p.enabled:
        return None
    thresholds = resolve_thresholds(preset_name(params), p.filters.model_dump())
    return NormalizerConfig(
        clean=CleanOptions(p.unicode_form, p.strip_markup, p.traditional_to_simplified),
        thresholds=thresholds,
        pii_enabled=p.pii.enabled,
        pii_types=tuple(p.pii.types),
        extra_patterns=dict(p.pii.extra_patterns),
        max_pii_char_frac=p.pii.max_pii_char_frac,
        allowed_languages=tuple(p.allowed_languages),
        min_lang_score=p.min_lang_score,
        drop_undetermined_language=p.drop_undetermined_language,
    )


def build_normalizer(params: Params) -> Normalizer | None:
    config = normalizer_config(params)
    return Normalizer(config) if config is not None else None


def _out_schema(schema: pa.Schema) -> pa.Schema:
    fields = [f for f in schema if f.name not in ("lang", "pii_count")]
    names = [f.name for f in fields]
    at = names.index("text") + 1 if "text" in names else len(fields)
    fields[at:at] = [pa.field("lang", pa.string()), pa.field("pii_count", pa.int32())]
    return pa.schema(fields)


@dataclass(frozen=True)
class Profiling:
    """Where a part's gate profile goes and how its PII is looked for (quality/part_profile.py)."""

    path: Path
    settings: dict[str, Any]
    detect: Any


def normalize_part(src: Path, dst: Path, ledger: Path, normalizer: Normalizer | None, batch_size: int,
                   row_groups: tuple[int, ...] | None = None, profiling: Profiling | None = None) -> PartResult:
    """One input part (or some of its row groups) -> its output part and ledger part (each replaced atomically),
    and with `profiling` the gate's profile of the part as written.
    Batches are cut inside each row group, so a part done in pieces gives the same batches, row groups and bytes."""
    pf = pq.ParquetFile(src)
    schema = _out_schema(pf.schema_arrow)
    entries: list[LedgerEntry] = []
    res = PartResult(extra={"redacted": 0, "redactions_by_type": Counter(), "text_bytes": 0})
    measured: list[pa.Table] = []
    with atomic_path(dst) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for g in row_groups if row_groups is not None else range(pf.num_row_groups):
                group = pf.read_row_group(g)
                for start in range(0, group.num_rows, batch_size):
                    out, texts = _normalize_batch(group.slice(start, batch_size), normalizer, schema, entries, res)
                    writer.write_table(out)
                    if profiling is not None:
                        measured.append(_profile_rows(out, texts, profiling.detect))
    write_parquet(ledger_table(entries), ledger)
    if profiling is not None:
        rows = part_profile.concat(measured, _profile_rows(schema.empty_table(), [], profiling.detect))
        part_profile.write_sidecar(profiling.path, rows, dst, profiling.settings)
    res.extra["redactions_by_type"] = dict(res.extra["redactions_by_type"])
    return res


def _profile_rows(out: pa.Table, texts: list[str], detect: Any) -> pa.Table:
    """The gate's profile of some output rows (quality/part_profile.py), with a copy of their languages."""
    return part_profile.measure(out.column("doc_id"), out.column("text"), detect, texts, {"lang": out.column("lang")})


def _normalize_batch(tbl: pa.Table, normalizer: Normalizer | None, schema: pa.Schema, entries: list[LedgerEntry],
                     res: PartResult) -> tuple[pa.Table, list[str]]:
    """The batch's output rows, and their texts as Python strings (what the gate's profile measures)."""
    ids = tbl.column("doc_id").to_pylist()
    texts = tbl.column("text").to_pylist() if "text" in tbl.column_names else [None] * len(ids)
    res.extra["text_bytes"] += sum(len(t.encode()) for t in texts if t)
    results = normalizer.process(texts) if normalizer else [DocResult(text=t or "") for t in texts]
    keep = [i for i, r in enumerate(results) if r.text is not None]
    for i, r in enumerate(results):
        if r.text is None:
            res.dropped.add(r.reason or "unknown", ids[i])
            entries.append(LedgerEntry(ids[i], STAGE, "dropped", r.reason or "unknown", r.detail))
        elif r.redactions:
            res.extra["redacted"] += 1
            res.extra["redactions_by_type"].update(r.redactions)
            entries.append(LedgerEntry(ids[i], STAGE, "redacted", "pii", json.dumps(r.redactions, sort_keys=True)))
    kept = tbl.take(pa.array(keep, pa.int64()))
    cols = {name: kept.column(name) for name in kept.column_names if name not in ("lang", "pii_count")}
    out_texts = [results[i].text for i in keep]
    cols["text"] = pa.array(out_texts, pa.large_string())
    cols["lang"] = pa.array([results[i].lang for i in keep], pa.string())
    cols["pii_count"] = pa.array([sum(results[i].redactions.values()) for i in keep], pa.int32())
    res.documents_in += len(ids)
    res.documents_out += len(keep)
    return pa.table({f.name: cols[f.name] for f in schema}).cast(schema), out_texts


PIECE_BYTES = 64 << 20  # a part larger than this (uncompressed) is cut into pieces that run on several workers


@dataclass(frozen=True)
class Piece:
    """Some row groups of a large part, done apart and merged in order."""

    unit: Unit
    index: int
    row_groups: tuple[int, ...]

    @property
    def key(self) -> str:
        return f"{self.unit.key} (piece {self.index + 1})"


def pieces(unit: Unit) -> list[Unit | Piece]:
    """The unit itself, or its row groups in runs of about PIECE_BYTES."""
    try:
        meta = pq.ParquetFile(unit.path).metadata
    except Exception:  # an unreadable part fails in its worker, with the error recorded there
        return [unit]
    runs: list[tuple[int, ...]] = []
    run: list[int] = []
    size = 0
    for g in range(meta.num_row_groups):
        run.append(g)
        size += meta.row_group(g).total_byte_size
        if size >= PIECE_BYTES:
            runs.append(tuple(run))
            run, size = [], 0
    if run:
        runs.append(tuple(run))
    return [unit] if len(runs) <= 1 else [Piece(unit, k, groups) for k, groups in enumerate(runs)]


def _piece_path(path: Path, index: int) -> Path:
    return path.with_name(f".{path.name}.piece{index:04d}.tmp")  # a .tmp: a killed run's pieces are cleaned up


@dataclass
class _Work:
    """The per-part work, picklable for the process pool and Ray (the normalizer is built once per process)."""

    config: NormalizerConfig | None
    batch_size: int
    parts_dir: Path
    ledger_dir: Path
    profile_dir: Path
    pii: dict[str, Any]  # the gate's PII detector settings (quality/profile.py pii_settings)
    _normalizer: Any = field(default=None, repr=False)
    _detect: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_normalizer": None, "_detect": None}

    def __call__(self, task: Unit | Piece) -> PartResult:
        if self._normalizer is None and self.config is not None:
            self._normalizer = Normalizer(self.config)
        if self._detect is None:
            self._detect = pii_detector(self.pii)
        unit = task.unit if isinstance(task, Piece) else task
        dst, ledger, profile = self._paths(unit)
        if isinstance(task, Piece):
            dst, ledger, profile = (_piece_path(p, task.index) for p in (dst, ledger, profile))
        profiling = Profiling(profile, part_profile.settings(self.pii), self._detect)
        return normalize_part(unit.path, dst, ledger, self._normalizer, self.batch_size,
                              task.row_groups if isinstance(task, Piece) else None, profiling)

    def _paths(self, unit: Unit) -> tuple[Path, Path, Path]:
        return tuple(d / f"{unit.part}.parquet" for d in (self.parts_dir, self.ledger_dir, self.profile_dir))

    def merge(self, unit: Unit, done: list[Piece], results: list[PartResult]) -> PartResult:
        """The pieces' parts, ledgers and profiles, concatenated in order into the unit's (row group by row group)."""
        dst, ledger, profile = self._paths(unit)
        parts = [_piece_path(dst, p.index) for p in done]
        ledgers = [_piece_path(ledger, p.index) for p in done]
        profiles = [_piece_path(profile, p.index) for p in done]
        with atomic_path(dst) as tmp:
            with pq.ParquetWriter(tmp, pq.ParquetFile(parts[0]).schema_arrow, compression="zstd") as writer:
                for path in parts:
                    pf = pq.ParquetFile(path)
                    for g in range(pf.num_row_groups):
                        writer.write_table(pf.read_row_group(g))
        write_parquet(pa.concat_tables([pq.read_table(p) for p in ledgers]).combine_chunks(), ledger)
        rows = pa.concat_tables([pq.read_table(p).replace_schema_metadata(None) for p in profiles]).combine_chunks()
        part_profile.write_sidecar(profile, rows, dst, part_profile.settings(self.pii))
        for path in parts + ledgers + profiles:
            path.unlink(missing_ok=True)
        total = PartResult(extra={"redacted": 0, "redactions_by_type": Counter(), "text_bytes": 0})
        for r in results:
            total.documents_in += r.documents_in
            total.documents_out += r.documents_out
            total.dropped.merge(r.dropped)
            total.quarantined.merge(r.quarantined)
            for k in ("redacted", "text_bytes"):
                total.extra[k] += r.extra[k]
            total.extra["redactions_by_type"].update(r.extra["redactions_by_type"])
        total.extra["redactions_by_type"] = dict(total.extra["redactions_by_type"])
        return total


def run(ctx: StageContext) -> dict[str, Any]:
    started = time.perf_counter()
    in_dir = ctx.input("dedup") / "parts"
    config = normalizer_config(ctx.params)
    settings = fingerprint_settings(STATE_VERSION, ctx.params.normalize.model_dump(), preset_name(ctx.params),
                                    code_digest(STAGE))
    store = PartStore(ctx.out, settings, ctx.log, version=STATE_VERSION)
    units = [Unit(name, p, name) for name, p in ((p.relative_to(in_dir).with_suffix("").as_posix(), p)
                                                  for p in list_parts(in_dir))]
    plan = store.plan(units)
    for d in (store.parts_dir, store.ledger_dir):
        d.mkdir(parents=True, exist_ok=True)
    bar = Progress(ctx.log, "normalize", len(plan.todo), "parts")
    run_bytes = 0

    def progress(unit: Unit, res: PartResult) -> None:
        nonlocal run_bytes
        run_bytes += res.extra["text_bytes"]
        bar.update(1)
        ctx.log.info("%s: %d in, %d kept, %d dropped, %d redacted", unit.key, res.documents_in, res.documents_out,
                     res.dropped.total(), res.extra["redacted"])

    tasks = {u.key: pieces(u) for u in plan.todo}
    executor = make_executor(ctx.params.execution, sum(map(len, tasks.values())),
                             sum(u.path.stat().st_size for u in plan.todo), ctx.project.data)
    work = _Work(config, ctx.params.normalize.batch_size, store.parts_dir, store.ledger_dir, store.profile_dir,
                 pii_settings(ctx.params.normalize.pii))
    # one worker gains nothing from pieces, and merging them costs a rewrite
    cut = (lambda u: tasks[u.key]) if executor.workers > 1 else None
    try:
        failed = run_units(store, plan.todo, work, executor, progress=progress, pieces=cut, merge=work.merge)
    finally:
        executor.close()
    bar.close()
    raise_failures(STAGE, failed)
    seconds = time.perf_counter() - started
    return _metrics(store, plan, run_bytes=run_bytes, seconds=seconds, preset=preset_name(ctx.params),
                    workers=executor.workers)


def _metrics(store: PartStore, plan: Any, *, run_bytes: int, seconds: float, preset: str,
             workers: int) -> dict[str, Any]:
    red: Counter[str] = Counter()
    for e in store.units.values():
        red.update(e.get("redactions_by_type", {}))
    return {
        **store.totals(),
        "redacted": sum(int(e.get("redacted", 0)) for e in store.units.values()),
        "redactions_by_type": dict(sorted(red.items())),
        "preset": preset,
        "parts": len(store.units),
        "new_parts": plan.new,
        "changed_parts": len(plan.todo) - plan.new,
        "removed_parts": len(plan.removed),
        "rebuilt": plan.rebuild,
        "workers": workers,
        "seconds": round(seconds, 3),
        "mb_processed": round(run_bytes / 2**20, 3),
        "mb_per_s": round(run_bytes / 2**20 / seconds, 3) if seconds > 0 else 0.0,
    }
