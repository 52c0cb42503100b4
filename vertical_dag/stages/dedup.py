"""dedup: drop exact and near-duplicate documents, incrementally, explaining every drop.

Input: data/ingested/parts/*.parquet. Output: data/deduplicated/parts/<same name>.parquet with the kept
documents plus `cluster_id` (doc_id of the cluster's kept document; a kept document's own id),
`canonical_hash` and `family_id` (doc_id of the template family's first document, at dedup.family_threshold); one ledger row per dropped document (reason exact_duplicate / near_duplicate,
ref_doc_id = the kept document, detail = similarities as JSON); the persistent index in
data/deduplicated/index/ (see vertical_dag/text/dedup_index.py for the decision rule).

Parts are processed in name order; each run processes only parts it has not seen, against everything
indexed before. A processed input part that changed or vanished, or changed dedup params, makes the
stage rebuild from scratch (logged, and `rebuilt` in the metrics). Text is streamed `batch_size`
documents at a time.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..params import DedupParams
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
from ..text.canonical import hash_hex
from ..text.dedup_index import EXACT, KEEP, NEAR, DedupConfig, DedupIndex
from ..text.lsh import optimal_bands, recall_bands
from .context import StageContext

STAGE = "dedup"
REASONS = {EXACT: "exact_duplicate", NEAR: "near_duplicate"}
INPUT = "data/ingested/parts"


def config_from_params(p: DedupParams) -> DedupConfig:
    if p.bands:
        bands, rows = p.bands, p.rows
    else:  # verified candidates can afford a recall-first banding; unverified ones need the balanced one
        bands, rows = recall_bands(p.threshold, p.num_perm) if p.verify else optimal_bands(p.threshold, p.num_perm)
    family = p.family_threshold if p.enabled and p.near else 0.0
    f_bands, f_rows = recall_bands(family, p.num_perm) if family else (0, 0)
    return DedupConfig(exact=p.enabled and p.exact, near=p.enabled and p.near, ngram_cjk=p.ngram_cjk,
                       ngram_words=p.ngram_words, num_perm=p.num_perm, bands=bands, rows=rows,
                       threshold=p.threshold, verify=p.verify, max_candidates=p.max_candidates, seed=p.seed,
                       family_threshold=family, family_bands=f_bands, family_rows=f_rows)


def part_name(folder: Path, path: Path) -> str:
    return path.relative_to(folder).with_suffix("").as_posix()


def read_rows(path: Path, rows: np.ndarray, column: str = "text") -> list[str]:
    """Values of `column` at `rows` of a parquet file, reading only the row groups that hold them."""
    f = pq.ParquetFile(path)
    bounds = np.cumsum([0] + [f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)])
    groups = np.unique(np.searchsorted(bounds, rows, side="right") - 1)
    table = f.read_row_groups(groups.tolist(), columns=[column])
    local = np.concatenate([np.arange(bounds[g], bounds[g + 1]) for g in groups])
    return table[column].take(pa.array(np.searchsorted(local, rows))).to_pylist()


def _rebuild_reason(state: dict, current: dict[str, Path], config: DedupConfig, index_dir: Path) -> str | None:
    if not state.get("parts"):
        return None
    if state.get("config") != config.fingerprint():
        return "dedup params changed"
    for p in state["parts"]:
        if p["name"] not in current:
            return f"input part {p['name']} vanished"
        fp = file_fingerprint(current[p["name"]], p)
        if fp["sha256"] != p["sha256"]:
            return f"input part {p['name']} changed"
        p.update(fp)  # same content, maybe a new mtime: remember it so the next run does not re-hash
    manifest = read_json(index_dir / "manifest.json", {})
    if [p["name"] for p in manifest.get("parts", [])] != [p["name"] for p in state["parts"]]:
        return "index and state disagree (an interrupted run)"
    return None


def run(ctx: StageContext) -> dict[str, Any]:
    started = time.perf_counter()
    out, config = ctx.out, config_from_params(ctx.params.dedup)
    in_dir = ctx.project.root / INPUT
    index_dir, state_file = out / "index", out / "state.json"
    current = {part_name(in_dir, p): p for p in list_parts(in_dir)}
    state = read_json(state_file, {}) or {}
    rebuilt = _rebuild_reason(state, current, config, index_dir)
    if rebuilt:
        ctx.log.warning("dedup: rebuilding from scratch: %s", rebuilt)
    if rebuilt or not state.get("parts"):
        for sub in ("parts", "ledger", "index"):
            shutil.rmtree(out / sub, ignore_errors=True)
        state = {"config": config.fingerprint(), "parts": []}
    index_dir.mkdir(parents=True, exist_ok=True)
    index = DedupIndex.load(index_dir, config) if state["parts"] else DedupIndex(index_dir, config)

    done = {p["name"] for p in state["parts"]}
    new = [n for n in sorted(current) if n not in done]
    if new and state["parts"] and new[0] < state["parts"][-1]["name"]:
        ctx.log.warning("dedup: new part %s sorts before processed part %s; earlier decisions stay, so the kept "
                        "set can differ from a from-scratch run", new[0], state["parts"][-1]["name"])
    docs_new = 0
    for name in new:
        entry = process_part(ctx, index, name, current[name], config)
        entry.update(file_fingerprint(current[name], None))
        state["parts"].append(entry)
        index.save()  # commit point 1: the index; state.json (commit point 2) names what it holds
        write_json(state, state_file)
        pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed buffers otherwise
        docs_new += entry["documents_in"]
        ctx.log.info("dedup: %s: %d in, %d kept, %d exact, %d near", name, entry["documents_in"],
                     entry["documents_out"], entry["exact"], entry["near"])
    if state["parts"] and not new:
        write_json(state, state_file)  # refreshed fingerprints (mtime) of unchanged parts
    seconds = time.perf_counter() - started
    return metrics(out, state, new, docs_new, seconds, rebuilt, config)


def process_part(ctx: StageContext, index: DedupIndex, name: str, path: Path, config: DedupConfig) -> dict:
    out, bs = ctx.out, ctx.params.dedup.batch_size
    src = pq.ParquetFile(path)
    k = len(index.parts)
    index.begin_part(name, src.metadata.num_rows)
    input_paths = {i: ctx.project.root / INPUT / f"{p['name']}.parquet" for i, p in enumerate(index.parts)}

    def fetch(part: int, rows: np.ndarray) -> list[str]:
        return read_rows(input_paths[part] if part != k else path, rows)

    entries: list[LedgerEntry] = []
    counts: Counter = Counter()
    by_source: dict[str, list[int]] = {}
    schema = src.schema_arrow.append(pa.field("cluster_id", pa.string())).append(pa.field("canonical_hash", pa.string()))
    schema = schema.append(pa.field("family_id", pa.string()))
    with atomic_path(out / "parts" / f"{name}.parquet") as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for rb in src.iter_batches(batch_size=bs):
                ids = rb.column("doc_id").to_pylist()
                res = index.add_batch(rb.column("text").to_pylist(), ids, fetch)
                keep = res.action == KEEP
                t = pa.Table.from_batches([rb]).append_column("cluster_id", pa.array(res.root_id, pa.string()))
                t = t.append_column("canonical_hash", pa.array([hash_hex(h) for h in res.canonical_hash]))
                t = t.append_column("family_id", pa.array(res.family_id, pa.string()))
                writer.write_table(t.filter(pa.array(keep)))
                sources = rb.column("source").to_pylist()
                for j in np.flatnonzero(~keep).tolist():
                    entries.append(ledger_entry(res, j, ids[j], config))
                for s, kept in zip(sources, keep.tolist(), strict=True):
                    c = by_source.setdefault(s, [0, 0])
                    c[0] += 1
                    c[1] += 0 if kept else 1
                counts.update(res.action.tolist())
    index.end_part()
    write_parquet(ledger_table(entries), out / "ledger" / f"{name}.parquet")
    n = sum(counts.values())
    return {"name": name, "documents_in": n, "documents_out": counts[KEEP], "exact": counts[EXACT],
            "near": counts[NEAR], "by_source": by_source}


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


def metrics(out: Path, state: dict, new: list[str], docs_new: int, seconds: float, rebuilt: str | None,
            config: DedupConfig) -> dict[str, Any]:
    parts = state["parts"]
    total = {k: sum(p[k] for p in parts) for k in ("documents_in", "documents_out", "exact", "near")}
    dropped = total["exact"] + total["near"]
    sources: dict[str, list[int]] = {}
    for p in parts:
        for s, (n_in, n_drop) in p["by_source"].items():
            c = sources.setdefault(s, [0, 0])
            c[0], c[1] = c[0] + n_in, c[1] + n_drop
    refs, examples = Counter(), {}
    for lp in list_parts(out / "ledger"):
        t = pq.read_table(lp, columns=["doc_id", "reason", "ref_doc_id"])
        refs.update(t["ref_doc_id"].to_pylist())
        for reason in REASONS.values():
            ex = examples.setdefault(reason, [])
            if len(ex) < 5:
                ex.extend(t.filter(pc.equal(t["reason"], reason))["doc_id"].to_pylist()[: 5 - len(ex)])
    return {
        "documents_in": total["documents_in"],
        "documents_out": total["documents_out"],
        "dropped": dropped,
        "quarantined": 0,
        "drops_by_reason": {"exact_duplicate": total["exact"], "near_duplicate": total["near"]},
        "examples_by_reason": {k: v for k, v in examples.items() if v},
        "exact_duplicates": total["exact"],
        "near_duplicates": total["near"],
        "clusters": len(refs),  # clusters with at least one dropped member
        "largest_cluster": 1 + max(refs.values()) if refs else 1,
        "duplicate_rate": round(dropped / total["documents_in"], 4) if total["documents_in"] else 0.0,
        "duplicate_rate_by_source": {s: round(d / n, 4) if n else 0.0 for s, (n, d) in sorted(sources.items())},
        "parts": len(parts),
        "new_parts": len(new),
        "new_documents": docs_new,
        "rebuilt": rebuilt,
        "bands": config.bands,
        "rows": config.rows,
        "seconds": round(seconds, 3),
        "documents_per_second": round(docs_new / seconds, 1) if seconds > 0 else 0.0,
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
