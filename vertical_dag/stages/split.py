"""Split: normalized documents -> train / validation / test Parquet files, decontaminated, plus splits.json.

Assignment is a pure function of (seed, group key) (vertical_dag/text/splitting.py), so the whole split is
recomputed each run without state, and an old document keeps its split when data is added. The default
group is the template family that dedup found, so variants of one form never straddle train and test.

Decontamination (vertical_dag/text/decontaminate.py): rare n-grams (boilerplate found in many documents
does not count) shared by a train document with validation, test or the evaluation task files are cut out
of it (a `redacted` ledger row), or the document is dropped when they cover most of it; a ledger row's
ref_doc_id names the evaluation document it overlaps. A train document already in train.parquet from the
last run is never changed later: a new validation/test document overlapping it is the one cut or dropped.
Every document gets a `contamination` score (share of its distinct n-grams found on the other side), which
the quality gate bounds.

Outputs: data/splits/{train,validation,test}.parquet (a `split` column added), README.md (a Hugging Face
dataset card: `datasets.load_dataset("data/splits")` loads the three splits), splits.json, .state.json (the
settings of the last run; not `state.json`, which `datasets` takes for a save_to_disk folder) and
ledger/split.parquet (a `split` row per kept document, dropped/redacted/flagged rows for contamination),
and .profile/ (what the split gate reads instead of the texts: vertical_dag/quality/split_profile.py).

Memory is bounded by the small per-document columns (ids, group keys, split, lengths) and the evaluation
side's texts: assignment uses only the ids and group columns; texts stream from the parts batch by batch,
once to be hashed for decontamination and once to be written (vertical_dag/stages/split_io.py); the
distinct n-grams go to a temporary spill by hash range (data/.ngram-spill-*, removed at the end).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..quality.contamination import measure, measure_bucket
from ..quality.split_profile import write_profile
from ..records import LEDGER_SCHEMA, LedgerEntry, ledger_table, read_json, write_json, write_parquet
from ..text.decontaminate import (
    Contamination,
    Protected,
    TextMapper,
    decontaminate,
    protected_rows,
    resolve_settings,
    spec_and_rule,
)
from ..text.hash_spill import HashSpill, bucket_of, distinct, read_bucket
from ..text.ngrams import NgramSpec
from ..text.overlap import CUT, DROPPED, FLAGGED
from ..text.splitting import SPLITS, assign_column, distinct_count, family_column, group_key_column
from . import STAGES
from .context import StageContext
from .executor import Executor, make_executor
from .progress import Progress, tracked
from .split_card import write_card
from .split_io import Parts, SplitWriters

STAGE = "split"
STATE_FILE = ".state.json"
EXAMPLES = 5
_EVAL_TEXT_FIELDS = ("text", "prompt", "question", "input", "context", "content", "choices", "ideal", "answer", "completion")
_LEDGER_ACTION = {CUT: "redacted", DROPPED: "dropped", FLAGGED: "flagged"}
_REASON = {CUT: "contaminated_span", DROPPED: "contaminated", FLAGGED: "contaminated"}


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        keys = [k for k in _EVAL_TEXT_FIELDS if k in obj] or list(obj)
        return [s for k in keys for s in _strings(obj[k])]
    if isinstance(obj, list):
        return [s for item in obj for s in _strings(item)]
    return []


def read_eval_files(root: Path, files: list[str], log: Any) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(eval id, text) for every record of the evaluation JSONL files; missing files and bad lines are counted."""
    items: list[tuple[str, str]] = []
    problems: Counter[str] = Counter()
    for rel in files:
        path = (root / rel) if not Path(rel).is_absolute() else Path(rel)
        if not path.is_file():
            log.warning("evaluation file %s not found: not used for decontamination", rel)
            problems["missing_file"] += 1
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    problems["bad_json_line"] += 1
                    continue
                text = "\n".join(_strings(obj)).strip()
                if text:
                    ident = obj.get("id") if isinstance(obj, dict) else None
                    items.append((f"eval:{rel}:{ident if ident is not None else lineno}", text))
    return items, dict(problems)


def decontamination_settings(params: Any) -> dict[str, Any]:
    """The decontamination settings in force: the preset (split.decontaminate.preset, auto: project.domain)
    with the keys params set. The split gate measures leakage with the same settings."""
    dc = params.split.decontaminate
    preset = params.project.domain if dc.preset == "auto" else dc.preset
    return {"preset": preset, **resolve_settings(preset, dc.model_dump())}


def _protected(ctx: StageContext, ids: pa.Array, trains: np.ndarray, same_settings: bool, spec: NgramSpec,
               spill: HashSpill, executor: Executor) -> Protected | None:
    """The current training documents that the last run's train.parquet held (settings unchanged only), as
    decontaminate's `protected`: each row group of that file hashed on the executor's workers. None when
    there is no such file (a first run): nothing is protected."""
    old = ctx.out / "train.parquet"
    if not same_settings or not old.exists():
        return None

    def rows(wanted: np.ndarray, common: np.ndarray) -> Any:
        f, tasks = pq.ParquetFile(old), []
        # one lookup for the whole file: index_in builds its hash table of `ids` on every call
        everyone = pc.fill_null(pc.index_in(f.read(columns=["doc_id"]).column("doc_id"), value_set=ids), -1).to_numpy()
        start = 0
        for g in range(f.num_row_groups):
            pos = everyone[start : start + f.metadata.row_group(g).num_rows]
            start += len(pos)
            keep = np.flatnonzero(pos >= 0)
            keep = keep[trains[pos[keep]]]
            if len(keep):
                tasks.append((old, g, keep, pos[keep]))
        return executor.map(_ProtectedGroup(spec, spill.share("protect-wanted", wanted),
                                            spill.share("protect-common", common)), tasks)

    return rows


@dataclass(frozen=True)
class _ProtectedGroup:
    """protected_rows of one row group of the last train.parquet (rows `keep`, documents `idx`), read by the
    worker itself; the n-grams wanted and the boilerplate ones memory-mapped from the spill's folder."""

    spec: NgramSpec
    wanted: Path
    common: Path

    def __call__(self, task: tuple[Path, int, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        path, group, keep, idx = task
        texts = pq.ParquetFile(path).read_row_group(group, columns=["text"]).column("text").take(pa.array(keep))
        return protected_rows(self.spec, idx, texts.to_pylist(), np.load(self.wanted, mmap_mode="r"),
                              np.load(self.common, mmap_mode="r"))


def _decontaminate(ctx: StageContext, parts: Parts, ids: pa.Array, split: np.ndarray, families: pa.Array,
                   same_settings: bool, settings: dict[str, Any], spill: HashSpill, executor: Executor
                   ) -> tuple[Contamination | None, list, dict]:
    """Run decontamination on the documents it concerns (the first pass hashes on the executor's workers);
    (result per document, eval items, eval file problems). None when switched off."""
    sp, dc = ctx.params.split, ctx.params.split.decontaminate
    if not (dc.enabled and sp.enabled and len(ids)):
        return None, [], {}
    eval_items, problems = read_eval_files(ctx.project.root, dc.extra_eval_files, ctx.log)
    spec, rule = spec_and_rule(settings)
    is_eval = split != 0
    selected = np.ones(len(ids), bool) if dc.internal else ~is_eval  # else evaluation splits: measured by the gate only
    item_ids = pa.array([ident for ident, _ in eval_items], pa.string())
    groups = pc.dictionary_encode(pa.concat_arrays([families, item_ids])).indices.to_numpy()
    protected = _protected(ctx, ids, selected & ~is_eval, same_settings, spec, spill, executor)
    hashing = Progress(ctx.log, "split: n-grams hashed", sum(1 for _ in parts.slices()), "batches")
    found = decontaminate(parts.texts, lambda i: ids[i].as_py(), is_eval, selected, groups, eval_items, spec, spill,
                          rule, protected, tracked(parts.hashed(spec, selected, is_eval, executor), hashing),
                          executor.map, _checked(parts.map_texts(executor), ctx.log),
                          threads=min(executor.workers, os.cpu_count() or 1))
    return found, eval_items, problems


def _checked(map_texts: TextMapper, log: Any) -> TextMapper:
    """map_texts, its progress logged: the training documents read again and checked (a batch of results
    per task, one per document)."""

    def run(fn: Any, rows: np.ndarray) -> Iterator[Any]:
        checked = Progress(log, "split: training documents sharing rare n-grams checked", len(rows), "documents")
        return tracked(map_texts(fn, rows), checked, size=len)

    return run


def _ledger(ids: pa.Array, split: np.ndarray, keys: pa.Array, found: Contamination | None) -> pa.Table:
    """A `split` row per kept document, after the contamination row of any document cut, dropped or flagged."""
    keep = ~found.is_(DROPPED) if found else np.ones(len(ids), bool)
    mask = pa.array(keep)
    n_kept = int(keep.sum())
    split_rows = pa.Table.from_arrays(
        [ids.filter(mask), pa.array([STAGE] * n_kept, pa.string()), pa.array(["split"] * n_kept, pa.string()),
         pa.array(np.array(SPLITS, dtype=object)[split[keep]], pa.string()), keys.filter(mask),
         pa.nulls(n_kept, pa.string())], schema=LEDGER_SCHEMA)
    entries, order = [], [np.flatnonzero(keep) * 2 + 1]
    for i in sorted(found.hits) if found else []:
        outcome, hit = found.outcome_of(i), found.hits[i]
        if outcome not in _LEDGER_ACTION:
            continue
        name = SPLITS[split[i]]
        side = "train" if name == "train" else f"{name} (overlaps a document already in train)"
        detail = {"side": side, "coverage": hit.coverage, "rare_shared_ngrams": hit.shared}
        if outcome == CUT:
            detail["chars_cut"] = hit.cut_chars
        entries.append(LedgerEntry(ids[i].as_py(), STAGE, _LEDGER_ACTION[outcome], _REASON[outcome], json.dumps(detail),
                                   hit.ref))
        order.append(np.array([2 * i]))
    table = pa.concat_tables([ledger_table(entries), split_rows]) if entries else split_rows
    at = np.concatenate(order[1:] + order[:1]) if entries else order[0]
    return table.take(pa.array(np.argsort(at, kind="stable")))


def _gate_measure(ctx: StageContext, found: Contamination | None, spill: HashSpill, split: np.ndarray,
                  keep: np.ndarray, ids: pa.Array, cols: dict[str, Any], settings: dict[str, Any],
                  executor: Executor) -> list[float] | None:
    """The split gate's contamination measure of the documents written, from the n-grams decontamination
    spilled (every document's, when it checked validation/test too), a spill bucket per task on the
    executor's workers; None when there are none to use."""
    if found is None or not ctx.params.split.decontaminate.internal:
        return None
    spec, _ = spec_and_rule(settings)
    uncut = keep.copy()
    uncut[list(found.texts)] = False
    cut = [(i, distinct(spec.hashes(text))) for i, text in found.texts.items()]  # after the cut: hashed again
    cut_h = np.concatenate([np.empty(0, np.uint64), *(h for _, h in cut)])
    cut_d = np.concatenate([np.empty(0, np.int64), *(np.full(len(h), i, np.int64) for i, h in cut)])
    cut_b = bucket_of(cut_h)
    family = pc.coalesce(*(c for c in (cols["family_id"], cols["cluster_id"]) if c is not None), ids)
    task = _MeasureBucket(spill.share("measure-uncut", uncut), spill.share("measure-eval", split != 0),
                          spill.share("measure-families", pc.dictionary_encode(family).indices.to_numpy()),
                          int(settings["max_ngram_families"]))
    tasks = [(path, cut_h[cut_b == k], cut_d[cut_b == k]) for k, path in enumerate(spill.paths())]
    return measure(executor.map(task, tasks), len(split))


@dataclass(frozen=True)
class _MeasureBucket:
    """contamination.measure_bucket of one spill bucket: its rows of documents written uncut, plus the rows
    of the cut texts in its hash range; the per-document arrays memory-mapped from the spill's folder."""

    uncut: Path
    is_eval: Path
    families: Path
    max_groups: int

    def __call__(self, task: tuple[Path, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        path, cut_h, cut_d = task
        h, d = read_bucket(path)
        m = np.load(self.uncut, mmap_mode="r")[d]
        return measure_bucket(np.concatenate([h[m], cut_h]), np.concatenate([d[m], cut_d]),
                              np.load(self.is_eval, mmap_mode="r"), np.load(self.families, mmap_mode="r"),
                              self.max_groups)


def _write(ctx: StageContext, parts: Parts, split: np.ndarray, found: Contamination | None,
           threaded: bool = False) -> np.ndarray:
    """Stream every document to its split's file with split, contamination and contaminated columns (cut
    texts replaced, dropped documents left out); the characters of each document as written. threaded:
    each file written on a thread of its own (SplitWriters)."""
    n = parts.n
    dropped = found.is_(DROPPED) if found else np.zeros(n, bool)
    contaminated = found.is_(DROPPED) | found.is_(FLAGGED) if found else np.zeros(n, bool)  # cut ones are clean after
    share = found.share if found else np.zeros(n, np.float64)
    cut = np.array(sorted(found.texts), np.int64) if found else np.zeros(0, np.int64)
    schema = parts.schema
    text_at = schema.get_field_index("text")
    if len(cut):  # a replaced text column is a plain string column, as it always was
        schema = schema.set(text_at, pa.field("text", pa.string()))
    schema = schema.append(pa.field("split", pa.string())).append(pa.field("contamination", pa.float64()))
    schema = schema.append(pa.field("contaminated", pa.bool_()))
    names = np.array(SPLITS, dtype=object)
    n_chars = np.zeros(n, np.int64)
    writing = Progress(ctx.log, "split: written", n, "documents")
    with SplitWriters(ctx.out, SPLITS, schema, threaded) as writers:
        for idx, t in tracked(parts.batches(), writing, size=lambda batch: len(batch[0])):
            text = t.column("text")
            if len(cut):
                here = idx[np.isin(idx, cut)]
                if len(here):
                    values = text.to_pylist()
                    for i in here.tolist():
                        values[i - idx[0]] = found.texts[i]
                    text = pa.chunked_array([pa.array(values, pa.string())])
                t = t.set_column(text_at, pa.field("text", pa.string()), text.cast(pa.string()))
            s = split[idx]
            t = t.append_column("split", pa.array(names[s], pa.string()))
            t = t.append_column("contamination", pa.array(share[idx], pa.float64()))
            t = t.append_column("contaminated", pa.array(contaminated[idx], pa.bool_()))
            n_chars[idx] = pc.fill_null(pc.utf8_length(text), 0).to_numpy()
            keep = ~dropped[idx]
            for k, name in enumerate(SPLITS):
                writers.write(name, t.filter(pa.array((s == k) & keep)))
    return n_chars


def run(ctx: StageContext) -> dict[str, Any]:
    started = time.perf_counter()
    sp = ctx.params.split
    seed = sp.seed if sp.seed is not None else ctx.params.project.seed
    fractions = (sp.fractions.train, sp.fractions.validation, sp.fractions.test)
    parts = Parts(ctx.project.root / STAGES["normalize"].out / "parts")
    n_in = parts.n
    executor = make_executor(ctx.params.execution, None, parts.bytes, ctx.project.data)  # a blind Ray node stops it here
    dc_settings = decontamination_settings(ctx.params)
    settings = {"seed": seed, "group_by": sp.group_by, "fractions": list(fractions)}
    legacy = ctx.out / "state.json"  # where earlier versions kept it: it stops `datasets` from loading the folder
    previous = (read_json(ctx.out / STATE_FILE, default=None) or read_json(legacy, default={}) or {}).get("settings")
    if previous and previous != settings:
        ctx.log.warning("split settings changed (%s -> %s): documents may change split", previous, settings)

    meta = [] if sp.group_by in ("family_id", "cluster_id") else ["meta"]  # read only when grouping by it
    cols = parts.columns(["doc_id", "cluster_id", "family_id", "source", *meta])
    ids = pc.cast(cols["doc_id"], pa.string())
    keys = group_key_column(ids, cols["cluster_id"], cols.get("meta"), sp.group_by, cols["family_id"])
    if not sp.enabled:  # no held-out data: everything trains, nothing is decontaminated
        fractions = (1.0, 0.0, 0.0)
    split = assign_column(seed, keys, fractions, executor.map)  # the keys hashed on the workers
    families = family_column(ids, cols["cluster_id"], cols["family_id"])
    with HashSpill(ctx.out.parent) as spill, ThreadPoolExecutor(2) as writer:
        try:
            found, eval_items, eval_problems = _decontaminate(ctx, parts, ids, split, families, previous == settings,
                                                              dc_settings, spill, executor)
            # with workers, the files are written on threads (one per file) and the ledger built on another
            # while the workers measure for the gate (one worker: one after the other, on one core)
            written = writer.submit(_write, ctx, parts, split, found, threaded=True) if executor.workers > 1 else None
            ledger = writer.submit(_ledger, ids, split, keys, found) if executor.workers > 1 else None
            dropped = found.is_(DROPPED) if found else np.zeros(n_in, bool)
            measured = _gate_measure(ctx, found, spill, split, ~dropped, ids, cols, dc_settings, executor)
            n_chars = written.result() if written else _write(ctx, parts, split, found)
            ledger_rows = ledger.result() if ledger else _ledger(ids, split, keys, found)
        finally:
            executor.close()
    write_profile(ctx.out, SPLITS, split, ~dropped, ids, n_chars, measured, dc_settings)
    counts = {name: int(((split == k) & ~dropped).sum()) for k, name in enumerate(SPLITS)}
    source = cols["source"] if cols["source"] is not None else pa.nulls(n_in, pa.string())
    summary = _summary(source, split, n_chars, ~dropped, fractions)
    summary.update(settings)
    write_json(summary, ctx.out / "splits.json")
    write_parquet(ledger_rows, ctx.ledger_dir / "split.parquet")
    write_json({"settings": settings}, ctx.out / STATE_FILE)
    legacy.unlink(missing_ok=True)
    decon = _decon_metrics(ids, split, found, dc_settings, eval_items)
    write_card(ctx.out, ctx.params.project.name, summary, decon, n_in)

    seconds = time.perf_counter() - started
    n_dropped = int(dropped.sum())
    ctx.log.info("split %d documents: %s; decontamination: %d cut, %d dropped, %d flagged", n_in,
                 ", ".join(f"{k} {v}" for k, v in counts.items()), decon["cut"], decon["dropped"], decon["flagged"])
    contaminated = found.is_(DROPPED) | found.is_(FLAGGED) if found else np.zeros(n_in, bool)
    held_out = split != 0
    return {
        "documents_in": n_in,
        "documents_out": sum(counts.values()),
        "dropped": n_dropped,
        "quarantined": 0,
        "drops_by_reason": {"contaminated": n_dropped} if n_dropped else {},
        "examples_by_reason": {"contaminated": [ids[int(i)].as_py() for i in np.flatnonzero(dropped)[:EXAMPLES]]}
        if n_dropped else {},
        "flagged": decon["flagged"],
        "redacted": decon["cut"],
        "decontamination": decon,
        "contaminated_train_documents": int((contaminated & ~held_out).sum()),
        "contaminated_eval_documents": int((contaminated & held_out).sum()),
        "max_eval_contamination": float(found.share[held_out & ~dropped].max(initial=0.0)) if found else 0.0,
        "eval_task_items": len(eval_items),
        "eval_file_problems": eval_problems,
        "splits": summary["splits"],
        "by_source": summary["by_source"],
        "group_by": sp.group_by,
        "groups": distinct_count(keys),
        "families": distinct_count(families),
        "new_parts": 0,
        "workers": executor.workers,
        "seconds": round(seconds, 3),
        "docs_per_s": round(n_in / seconds, 1) if seconds > 0 else 0.0,
    }


def _summary(source: pa.Array, split: np.ndarray, n_chars: np.ndarray, keep: np.ndarray,
             fractions: tuple[float, ...]) -> dict[str, Any]:
    """Documents and characters per split, overall and per source."""
    kept = pa.table({"source": source, "split": split, "chars": n_chars}).filter(pa.array(keep))
    by_source: dict[Any, dict[str, dict[str, int]]] = {}
    for row in kept.group_by(["source", "split"]).aggregate([("chars", "sum"), ("chars", "count")]).to_pylist():
        per = by_source.setdefault(row["source"], {s: {"documents": 0, "chars": 0} for s in SPLITS})
        per[SPLITS[row["split"]]] = {"documents": row["chars_count"], "chars": row["chars_sum"]}
    total_docs, total_chars = max(kept.num_rows, 1), max(int(n_chars[keep].sum()), 1)
    summary: dict[str, Any] = {"splits": {}, "by_source": {}}
    for name, target in zip(SPLITS, fractions, strict=True):
        d = sum(v[name]["documents"] for v in by_source.values())
        c = sum(v[name]["chars"] for v in by_source.values())
        summary["splits"][name] = {"documents": d, "chars": c, "fraction": round(d / total_docs, 6),
                                   "char_fraction": round(c / total_chars, 6), "target": target}
    for src, per in sorted(by_source.items()):
        n_src = max(sum(v["documents"] for v in per.values()), 1)
        summary["by_source"][src] = {s: {**v, "fraction": round(v["documents"] / n_src, 6)} for s, v in per.items()}
    return summary


def _decon_metrics(ids: pa.Array, split: np.ndarray, found: Contamination | None, settings: dict[str, Any],
                   eval_items: list) -> dict[str, Any]:
    """How much decontamination removed and why, with examples."""
    out: dict[str, Any] = {"settings": settings, "cut": 0, "dropped": 0, "flagged": 0, "chars_cut": 0,
                           "boilerplate_ngrams": 0, "eval_docs_sharing_rare_ngrams": 0, "examples": []}
    if found is None:
        return out
    out.update(cut=int(found.is_(CUT).sum()), dropped=int(found.is_(DROPPED).sum()),
               flagged=int(found.is_(FLAGGED).sum()), chars_cut=sum(h.cut_chars for h in found.hits.values()),
               boilerplate_ngrams=found.boilerplate_ngrams, eval_docs_sharing_rare_ngrams=found.eval_docs_sharing_rare,
               against={"validation_test": int((split != 0).sum()), "eval_file_items": len(eval_items)})
    for outcome in (DROPPED, CUT, FLAGGED):
        for i in np.flatnonzero(found.is_(outcome))[:EXAMPLES].tolist():
            hit = found.hits[i]
            out["examples"].append({"doc_id": ids[i].as_py(), "split": SPLITS[split[i]], "outcome": outcome,
                                    "coverage": hit.coverage, "rare_shared_ngrams": hit.shared,
                                    "chars_cut": hit.cut_chars, "overlaps": hit.ref})
    return out
