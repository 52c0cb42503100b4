"""dedup: drop exact and near-duplicate documents, incrementally, explaining every drop.

Input: data/ingested/parts/*.parquet. Output: data/deduplicated/parts/<same name>.parquet with the kept
documents plus `cluster_id` (doc_id of the cluster's kept document; a kept document's own id),
`canonical_hash` and `family_id` (doc_id of the template family's first document, at dedup.family_threshold); one ledger row per dropped document (reason exact_duplicate / near_duplicate,
ref_doc_id = the kept document, detail = similarities as JSON); the persistent index in
data/deduplicated/index/ (see vertical_dag/text/dedup_index.py for the decision rule).

Parts are processed in arrival order (stages/ingest.py), so an incremental run and a from-scratch run decide
alike whatever the files are called; each run processes only parts it has not seen, against everything
indexed before (the part-stage core, stages/parts.py). A processed input part that changed or vanished, or
changed dedup params, makes the stage rebuild from scratch (logged, and `rebuilt` in the metrics). Text is
streamed `batch_size` documents at a time.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..params import DedupParams
from ..quality import part_profile
from ..records import (
    LedgerEntry,
    QueuedWriter,
    atomic_path,
    ledger_table,
    list_parts,
    read_json,
    row_slices,
    write_parquet,
)
from ..text.canonical import hash_hex
from ..text.dedup_index import EXACT, KEEP, NEAR, DedupConfig, DedupIndex, Prepared, prepare_batch
from ..text.hash_spill import distinct
from ..text.lsh import optimal_bands, recall_bands
from .context import StageContext
from .executor import make_executor
from .inputs import code_digest
from .parts import PartResult, PartStore, Unit, fingerprint_settings, raise_failures, run_units

STAGE = "dedup"
REASONS = {EXACT: "exact_duplicate", NEAR: "near_duplicate"}


def config_from_params(p: DedupParams) -> DedupConfig:
    if p.bands:
        bands, rows = p.bands, p.rows
    else:  # verified candidates can afford a recall-first banding; unverified ones need the balanced one
        bands, rows = recall_bands(p.threshold, p.num_perm) if p.verify else optimal_bands(p.threshold, p.num_perm)
    family = p.family_threshold if p.enabled and p.near else 0.0
    f_bands, f_rows = recall_bands(family, p.num_perm) if family else (0, 0)
    chars = p.ngram_chars if p.spaced_shingles == "chars" else 0
    return DedupConfig(exact=p.enabled and p.exact, near=p.enabled and p.near, ngram_cjk=p.ngram_cjk,
                       ngram_words=p.ngram_words, ngram_chars=chars, num_perm=p.num_perm, bands=bands, rows=rows,
                       threshold=p.threshold, verify=p.verify, max_candidates=p.max_candidates, seed=p.seed,
                       family_threshold=family, family_bands=f_bands, family_rows=f_rows)


def part_name(folder: Path, path: Path) -> str:
    return path.relative_to(folder).with_suffix("").as_posix()


def read_rows(path: Path, rows: np.ndarray, column: str = "text") -> list[str]:
    """Values of `column` at `rows` of a parquet file, reading only the row groups that hold them."""
    f = pq.ParquetFile(path)
    bounds = np.cumsum([0] + [f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)])
    groups = distinct(np.searchsorted(bounds, rows, side="right") - 1)
    table = f.read_row_groups(groups.tolist(), columns=[column])
    local = np.concatenate([np.arange(bounds[g], bounds[g + 1]) for g in groups])
    return table[column].take(pa.array(np.searchsorted(local, rows))).to_pylist()


def input_units(in_dir: Path) -> list[Unit]:
    """Input parts in arrival order (ties and parts without an arrival number: by name)."""
    from .ingest import arrival_of

    parts = [(arrival_of(p), part_name(in_dir, p), p) for p in list_parts(in_dir)]
    return [Unit(name, path, name) for _, name, path in sorted(parts, key=lambda t: (t[0], t[1]))]


def run(ctx: StageContext) -> dict[str, Any]:
    started = time.perf_counter()
    config = config_from_params(ctx.params.dedup)
    in_dir = ctx.input("ingest") / "parts"
    store = PartStore(ctx.out, fingerprint_settings(config.fingerprint(), code_digest(STAGE)), ctx.log)
    index_dir = ctx.out / "index"
    manifest = read_json(index_dir / "manifest.json", {}) or {}
    if store.units and [p["name"] for p in manifest.get("parts", [])] != store.ordered():
        ctx.log.warning("dedup: index and state disagree (an interrupted run): rebuilding")
        store.reset()
    plan = store.plan(input_units(in_dir), order_dependent=True)
    # before anything is removed: a Ray cluster that cannot see data/ stops the stage here
    executor = make_executor(ctx.params.execution, None, sum(u.path.stat().st_size for u in plan.todo),
                             ctx.project.data)
    if plan.rebuild or not store.units:
        shutil.rmtree(index_dir, ignore_errors=True)
    for d in (store.parts_dir, store.ledger_dir, index_dir):
        d.mkdir(parents=True, exist_ok=True)
    background = executor.workers > 1  # index merges on a thread of their own: one worker means one core
    index = DedupIndex.load(index_dir, config, background) if store.units else DedupIndex(index_dir, config, background)
    paths = {i: in_dir / f"{p['name']}.parquet" for i, p in enumerate(index.parts)}

    # one stream of batches over every part, so workers hash the next part's batches while this process
    # decides the current one (a map per part left them idle at each part's end: 700 parts at 100x)
    slices = [(u.path, *s) for u in plan.todo for s in row_slices(pq.ParquetFile(u.path), ctx.params.dedup.batch_size)]
    # a batch's hashes are a few MB: 8 in flight per worker keep the workers busy while this process is
    # held up (an index merge, a part's write), which 2 did not
    prepared = executor.map(_Prepare(config), slices, window=PREPARED_IN_FLIGHT * executor.workers)

    def work(unit: Unit) -> PartResult:
        paths[len(index.parts)] = unit.path
        res = process_part(ctx, index, unit, paths, config, store, prepared, threaded=background)
        index.save()  # commit point 1: the index; state.json (commit point 2) names what it holds
        pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed buffers otherwise
        return res

    def progress(unit: Unit, res: PartResult) -> None:
        ctx.log.info("dedup: %s: %d in, %d kept, %d exact, %d near", unit.key, res.documents_in, res.documents_out,
                     res.dropped.counts["exact_duplicate"], res.dropped.counts["near_duplicate"])

    try:
        failed = run_units(store, plan.todo, work, progress=progress, sequential=True)
    finally:
        executor.close()
    raise_failures(STAGE, failed)
    return metrics(store, plan, time.perf_counter() - started, config)


PREPARED_IN_FLIGHT = 8


@dataclass(frozen=True)
class _Prepare:
    """Hash one batch (path, row group, first row, rows): canonical forms, shingles, signatures. The costly
    part, run on every core; the decisions stay in this process, in order, so the outcome does not depend
    on the executor."""

    config: DedupConfig

    def __call__(self, s: tuple[Path, int, int, int]) -> tuple[Prepared, pa.Array]:
        """The batch's hashes, and its texts' lengths for the gate's profile (quality/part_profile.py)."""
        path, g, start, n = s
        texts = pq.ParquetFile(path).read_row_group(g, columns=["text"]).slice(start, n).column("text")
        return prepare_batch(texts.to_pylist(), self.config), part_profile.lengths(texts)


def process_part(ctx: StageContext, index: DedupIndex, unit: Unit, paths: dict[int, Path], config: DedupConfig,
                 store: PartStore, prepared: Iterator[tuple[Prepared, pa.Array]], threaded: bool = False) -> PartResult:
    """Decide one part's batches in order; `prepared` yields their hashes and lengths (the stream over every
    part). The part is written with the gate's profile of it (doc_id, n_chars) beside it; threaded: encoded
    on a thread while the next batch is decided."""
    src = pq.ParquetFile(unit.path)
    index.begin_part(unit.key, src.metadata.num_rows)

    def fetch(part: int, rows: np.ndarray) -> list[str]:
        return read_rows(paths[part], rows)

    entries: list[LedgerEntry] = []
    measured: list[pa.Table] = []
    res = PartResult(extra={"by_source": {}})
    schema = src.schema_arrow.append(pa.field("cluster_id", pa.string())).append(pa.field("canonical_hash", pa.string()))
    schema = schema.append(pa.field("family_id", pa.string()))
    with atomic_path(store.part_path(unit.part)) as tmp:
        with QueuedWriter(tmp, schema, threaded) as writer:
            for g, start, n in row_slices(src, ctx.params.dedup.batch_size):
                prep, n_chars = next(prepared)
                rb = src.read_row_group(g).slice(start, n)
                ids = rb.column("doc_id").to_pylist()
                dec = index.add_batch([], ids, fetch, prepared=prep)
                keep = dec.action == KEEP
                t = rb.append_column("cluster_id", pa.array(dec.root_id, pa.string()))
                t = t.append_column("canonical_hash", pa.array([hash_hex(h) for h in dec.canonical_hash]))
                t = t.append_column("family_id", pa.array(dec.family_id, pa.string()))
                kept = pa.array(keep)
                writer.write(t.filter(kept))
                measured.append(pa.table({"doc_id": pc.cast(rb.column("doc_id").filter(kept), pa.string()),
                                          "n_chars": n_chars.filter(kept)}))
                for j in np.flatnonzero(~keep).tolist():
                    entries.append(ledger_entry(dec, j, ids[j], config))
                    res.dropped.add(REASONS[int(dec.action[j])], ids[j])
                for s, kept in zip(rb.column("source").to_pylist(), keep.tolist(), strict=True):
                    c = res.extra["by_source"].setdefault(s, [0, 0])
                    c[0] += 1
                    c[1] += 0 if kept else 1
                res.documents_in += len(ids)
                res.documents_out += int(keep.sum())
    index.end_part()
    write_parquet(ledger_table(entries), store.ledger_path(unit.part))
    empty = part_profile.measure(pa.array([], pa.string()), pa.array([], pa.string()))
    part_profile.write_sidecar(store.profile_path(unit.part), part_profile.concat(measured, empty),
                               store.part_path(unit.part), part_profile.settings(None))
    return res


def ledger_entry(res, j: int, doc_id: str, config: DedupConfig) -> LedgerEntry:
    detail: dict[str, Any] = {"est_jaccard": round(float(res.est[j]), 4), "threshold": config.threshold}
    if res.action[j] == EXACT:
        detail["canonical_hash"] = hash_hex(res.canonical_hash[j])
    elif not np.isnan(res.verified[j]):
        detail["verified_jaccard"] = round(float(res.verified[j]), 4)
    if res.match_id[j] != res.root_id[j]:
        detail["matched_doc_id"] = res.match_id[j]  # a duplicate of a duplicate: ref is its cluster's kept doc
    return LedgerEntry(doc_id=doc_id, stage=STAGE, action="dropped", reason=REASONS[int(res.action[j])],
                       detail=json.dumps(detail), ref_doc_id=res.root_id[j])


def metrics(store: PartStore, plan: Any, seconds: float, config: DedupConfig) -> dict[str, Any]:
    sources: dict[str, list[int]] = {}
    for e in store.units.values():
        for s, (n_in, n_drop) in e["by_source"].items():
            c = sources.setdefault(s, [0, 0])
            c[0], c[1] = c[0] + n_in, c[1] + n_drop
    refs: Counter = Counter()
    for lp in list_parts(store.ledger_dir):
        refs.update(pq.read_table(lp, columns=["ref_doc_id"])["ref_doc_id"].to_pylist())
    totals = store.totals()
    new_docs = sum(store.units[u.key]["documents_in"] for u in plan.todo if u.key in store.units)
    return {
        **totals,
        "exact_duplicates": totals["drops_by_reason"].get("exact_duplicate", 0),
        "near_duplicates": totals["drops_by_reason"].get("near_duplicate", 0),
        "clusters": len(refs),  # clusters with at least one dropped member
        "largest_cluster": 1 + max(refs.values()) if refs else 1,
        "duplicate_rate": round(totals["dropped"] / totals["documents_in"], 4) if totals["documents_in"] else 0.0,
        "duplicate_rate_by_source": {s: round(d / n, 4) if n else 0.0 for s, (n, d) in sorted(sources.items())},
        "parts": len(store.units),
        "new_parts": len(plan.todo),  # processed by this run
        "new_documents": new_docs,
        "rebuilt": plan.rebuild,
        "bands": config.bands,
        "rows": config.rows,
        "seconds": round(seconds, 3),
        "documents_per_second": round(new_docs / seconds, 1) if seconds > 0 else 0.0,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **memory_split(),
    }


def memory_split() -> dict[str, float]:
    """Resident memory now, split into private (anonymous) memory and pages of memory-mapped index files,
    which the OS can drop and re-read (Linux; empty elsewhere)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    kb = {k: int(fields[k].split()[0]) for k in ("RssAnon", "RssFile") if k in fields}
    return {"rss_anon_mb": round(kb.get("RssAnon", 0) / 1024, 1), "rss_file_mb": round(kb.get("RssFile", 0) / 1024, 1)}
