"""Normalize: each deduplicated part -> a cleaned, PII-redacted, quality-filtered part of the same name.

Input: data/deduplicated/parts/*.parquet (documents + cluster_id / canonical_hash). Output:
data/normalized/parts/<same name>.parquet with `lang` set and a `pii_count` column, and
data/normalized/ledger/<same name>.parquet with a `dropped` row (reason) per removed document and a
`redacted` row (counts per type) per kept document that had PII.

Incremental: state.json records each input part's sha256; only new or changed parts are processed, a vanished
part's output is removed, and a change of the normalize params (or the project domain, which picks the
preset) rebuilds everything.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..params import NormalizeParams, Params
from ..records import (
    LedgerEntry,
    atomic_path,
    file_fingerprint,
    ledger_table,
    list_parts,
    read_json,
    write_json,
    write_parquet,
)
from ..text.clean import CleanOptions
from ..text.normalizer import DocResult, Normalizer, NormalizerConfig
from ..text.quality import resolve_thresholds
from . import STAGES
from .context import StageContext

STAGE = "normalize"
STATE_VERSION = 1
EXAMPLES = 5


def preset_name(params: Params) -> str:
    p = params.normalize
    return params.project.domain if p.preset == "auto" else p.preset


def build_normalizer(params: Params) -> Normalizer | None:
    """None when normalize.enabled is false: documents then pass through unchanged."""
    p: NormalizeParams = params.normalize
    if not p.enabled:
        return None
    thresholds = resolve_thresholds(preset_name(params), p.filters.model_dump())
    return Normalizer(NormalizerConfig(
        clean=CleanOptions(p.unicode_form, p.strip_markup, p.traditional_to_simplified),
        thresholds=thresholds,
        pii_enabled=p.pii.enabled,
        pii_types=tuple(p.pii.types),
        extra_patterns=dict(p.pii.extra_patterns),
        max_pii_char_frac=p.pii.max_pii_char_frac,
        allowed_languages=tuple(p.allowed_languages),
        min_lang_score=p.min_lang_score,
        drop_undetermined_language=p.drop_undetermined_language,
    ))


def params_fingerprint(params: Params) -> str:
    blob = json.dumps({"normalize": params.normalize.model_dump(), "preset": preset_name(params)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _out_schema(schema: pa.Schema) -> pa.Schema:
    fields = [f for f in schema if f.name not in ("lang", "pii_count")]
    names = [f.name for f in fields]
    at = names.index("text") + 1 if "text" in names else len(fields)
    fields[at:at] = [pa.field("lang", pa.string()), pa.field("pii_count", pa.int32())]
    return pa.schema(fields)


def normalize_part(src: Path, dst: Path, ledger: Path, normalizer: Normalizer | None, batch_size: int, log: Any) -> dict[str, Any]:
    """One input part -> its output part and ledger part (each replaced atomically). Returns the part's counts."""
    pf = pq.ParquetFile(src)
    schema = _out_schema(pf.schema_arrow)
    entries: list[LedgerEntry] = []
    drops: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    redactions: Counter[str] = Counter()
    n_in = n_out = n_redacted = 0
    text_bytes = 0
    with atomic_path(dst) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in pf.iter_batches(batch_size=batch_size):
                tbl = pa.Table.from_batches([batch])
                ids = tbl.column("doc_id").to_pylist()
                texts = tbl.column("text").to_pylist() if "text" in tbl.column_names else [None] * len(ids)
                text_bytes += sum(len(t.encode()) for t in texts if t)
                results = normalizer.process(texts) if normalizer else [DocResult(text=t or "") for t in texts]
                keep = [i for i, r in enumerate(results) if r.text is not None]
                for i, r in enumerate(results):
                    if r.text is None:
                        drops[r.reason or "unknown"] += 1
                        ex = examples.setdefault(r.reason or "unknown", [])
                        if len(ex) < EXAMPLES:
                            ex.append(ids[i])
                        entries.append(LedgerEntry(ids[i], STAGE, "dropped", r.reason or "unknown", r.detail))
                    elif r.redactions:
                        n_redacted += 1
                        redactions.update(r.redactions)
                        entries.append(LedgerEntry(ids[i], STAGE, "redacted", "pii", json.dumps(r.redactions, sort_keys=True)))
                kept = tbl.take(pa.array(keep, pa.int64()))
                cols = {name: kept.column(name) for name in kept.column_names if name not in ("lang", "pii_count")}
                cols["text"] = pa.array([results[i].text for i in keep], pa.large_string())
                cols["lang"] = pa.array([results[i].lang for i in keep], pa.string())
                cols["pii_count"] = pa.array([sum(results[i].redactions.values()) for i in keep], pa.int32())
                writer.write_table(pa.table({f.name: cols[f.name] for f in schema}).cast(schema))
                n_in += len(ids)
                n_out += len(keep)
    write_parquet(ledger_table(entries), ledger)
    log.info("%s: %d in, %d kept, %d dropped, %d redacted", src.name, n_in, n_out, n_in - n_out, n_redacted)
    return {"documents_in": n_in, "documents_out": n_out, "dropped": n_in - n_out, "redacted": n_redacted,
            "drops_by_reason": dict(drops), "examples_by_reason": examples,
            "redactions_by_type": dict(redactions), "text_bytes": text_bytes}


def run(ctx: StageContext) -> dict[str, Any]:
    started = time.perf_counter()
    in_dir = ctx.project.root / STAGES["dedup"].out / "parts"
    parts_dir, ledger_dir = ctx.out / "parts", ctx.ledger_dir
    state_path = ctx.out / "state.json"
    state = read_json(state_path, default=None) or {}
    pfp = params_fingerprint(ctx.params)
    rebuild = bool(state) and (state.get("params") != pfp or state.get("version") != STATE_VERSION)
    if rebuild:
        ctx.log.info("normalize params changed: rebuilding every part")
        for folder in (parts_dir, ledger_dir):
            for f in list_parts(folder):
                f.unlink()
    known: dict[str, dict] = {} if rebuild else dict(state.get("parts", {}))

    inputs = {p.relative_to(in_dir).with_suffix("").as_posix(): p for p in list_parts(in_dir)}
    removed = sorted(set(known) - set(inputs))
    for name in removed:
        (parts_dir / f"{name}.parquet").unlink(missing_ok=True)
        (ledger_dir / f"{name}.parquet").unlink(missing_ok=True)
        ctx.log.info("input part %s vanished: its normalized part and ledger are removed", name)
        del known[name]

    normalizer = build_normalizer(ctx.params)
    new = changed = 0
    run_bytes = 0
    for name, src in inputs.items():
        old = known.get(name)
        fp = file_fingerprint(src, old)  # re-reads a part only when its size or mtime changed
        if old and old.get("sha256") == fp["sha256"]:
            known[name] = {**old, **fp}
            continue
        if old:
            changed += 1
            ctx.log.info("input part %s changed: replacing its normalized part", name)
        else:
            new += 1
        try:
            counts = normalize_part(src, parts_dir / f"{name}.parquet", ledger_dir / f"{name}.parquet", normalizer,
                                    ctx.params.normalize.batch_size, ctx.log)
        except (OSError, KeyError, pa.ArrowException) as exc:  # unreadable part: recorded, the run goes on
            ctx.log.error("cannot normalize part %s: %s", name, exc)
            counts = {"documents_in": 0, "documents_out": 0, "dropped": 0, "redacted": 0, "error": str(exc)}
            (parts_dir / f"{name}.parquet").unlink(missing_ok=True)
        run_bytes += counts.pop("text_bytes", 0)
        known[name] = {**fp, **counts}
        write_json({"version": STATE_VERSION, "params": pfp, "parts": known}, state_path)
    write_json({"version": STATE_VERSION, "params": pfp, "parts": known}, state_path)
    seconds = time.perf_counter() - started
    return _metrics(known, new=new, changed=changed, removed=len(removed), rebuilt=rebuild,
                    run_bytes=run_bytes, seconds=seconds, preset=preset_name(ctx.params))


def _metrics(parts: dict[str, dict], *, new: int, changed: int, removed: int, rebuilt: bool, run_bytes: int,
             seconds: float, preset: str) -> dict[str, Any]:
    drops: Counter[str] = Counter()
    red: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for entry in parts.values():
        drops.update(entry.get("drops_by_reason", {}))
        red.update(entry.get("redactions_by_type", {}))
        for reason, ids in entry.get("examples_by_reason", {}).items():
            slot = examples.setdefault(reason, [])
            slot.extend(ids[: EXAMPLES - len(slot)])
    total = lambda key: sum(int(e.get(key, 0)) for e in parts.values())  # noqa: E731
    return {
        "documents_in": total("documents_in"),
        "documents_out": total("documents_out"),
        "dropped": total("dropped"),
        "quarantined": 0,
        "redacted": total("redacted"),
        "drops_by_reason": dict(sorted(drops.items())),
        "examples_by_reason": dict(sorted(examples.items())),
        "redactions_by_type": dict(sorted(red.items())),
        "preset": preset,
        "parts": len(parts),
        "parts_with_errors": sum(1 for e in parts.values() if "error" in e),
        "new_parts": new,
        "changed_parts": changed,
        "removed_parts": removed,
        "rebuilt": rebuilt,
        "seconds": round(seconds, 3),
        "mb_processed": round(run_bytes / 2**20, 3),
        "mb_per_s": round(run_bytes / 2**20 / seconds, 3) if seconds > 0 else 0.0,
    }
