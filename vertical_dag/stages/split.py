"""Split: normalized documents -> train / validation / test Parquet files, decontaminated, plus splits.json.

Assignment is a pure function of (seed, group key) (vertical_dag/text/splitting.py), so the whole split is
recomputed each run without state, and an old document keeps its split when data is added.

Decontamination: n-grams (word 13-grams, or character 25-grams for CJK) of validation, test and any evaluation
task files form an index; a train document sharing at least `min_shared_ngrams` of them is `dropped` (or
`flagged` and kept), with a ledger row whose ref_doc_id names the evaluation document it overlaps. A train
document already in train.parquet from the last run is never dropped later: a new validation/test document
overlapping it is the contaminated one. Every document gets a `contamination` score (share of its distinct
n-grams found on the other side), which the quality gate reads.

Outputs: data/splits/{train,validation,test}.parquet (a `split` column added), data/splits/splits.json,
data/splits/ledger/split.parquet (a `split` row per kept document, dropped/flagged rows for contamination).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..records import LedgerEntry, ledger_table, read_json, read_parts, write_json, write_parquet
from ..text.decontaminate import decontaminate
from ..text.ngrams import NgramSpec
from ..text.splitting import SPLITS, assign, group_keys
from . import STAGES
from .context import StageContext

STAGE = "split"
EXAMPLES = 5
_EVAL_TEXT_FIELDS = ("text", "prompt", "question", "input", "context", "content", "choices", "ideal", "answer", "completion")


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


def run(ctx: StageContext) -> dict[str, Any]:
    started = time.perf_counter()
    sp = ctx.params.split
    seed = sp.seed if sp.seed is not None else ctx.params.project.seed
    fractions = (sp.fractions.train, sp.fractions.validation, sp.fractions.test)
    in_dir = ctx.project.root / STAGES["normalize"].out / "parts"
    docs = read_parts(in_dir)
    n_in = docs.num_rows
    settings = {"seed": seed, "group_by": sp.group_by, "fractions": list(fractions)}
    previous = (read_json(ctx.out / "state.json", default={}) or {}).get("settings")
    if previous and previous != settings:
        ctx.log.warning("split settings changed (%s -> %s): documents may change split", previous, settings)

    ids = docs.column("doc_id").to_pylist()
    clusters = docs.column("cluster_id").to_pylist() if "cluster_id" in docs.column_names else [None] * n_in
    metas = docs.column("meta").to_pylist() if "meta" in docs.column_names else [None] * n_in
    keys = group_keys(ids, clusters, metas, sp.group_by)
    if not sp.enabled:  # no held-out data: everything trains, nothing is decontaminated
        fractions = (1.0, 0.0, 0.0)
    split_of = [assign(seed, k, fractions) for k in keys]
    texts = docs.column("text").to_pylist() if n_in else []

    # ---- decontamination (vertical_dag/text/decontaminate.py): train vs validation + test + task files
    dc = sp.decontaminate
    spec = NgramSpec(word_n=dc.word_ngram, char_n=dc.char_ngram)
    contamination = [0.0] * n_in
    contaminated = [False] * n_in
    entries: list[LedgerEntry] = []
    eval_items, eval_problems = read_eval_files(ctx.project.root, dc.extra_eval_files, ctx.log) if dc.enabled else ([], {})
    old_train_file = ctx.out / "train.parquet"
    protected: set[str] = set()
    if previous == settings and old_train_file.exists():  # train documents of the last run keep their place
        protected = set(pq.read_table(old_train_file, columns=["doc_id"]).column("doc_id").to_pylist())
    if dc.enabled and sp.enabled and n_in:
        found = decontaminate(ids, texts, [s != "train" for s in split_of], protected, eval_items, spec,
                              dc.min_shared_ngrams, keep_contaminated=dc.action == "flagged")
        contamination, contaminated = found.share, found.contaminated
        for i in range(n_in):
            if contaminated[i]:
                side = "train" if split_of[i] == "train" else f"{split_of[i]} (overlaps a document already in train)"
                entries.append(LedgerEntry(ids[i], STAGE, dc.action, "contaminated",
                                           f"{side}: {found.shared[i]} shared n-grams (char {spec.char_n} / word {spec.word_n})",
                                           found.ref[i]))
        ctx.log.info("decontamination: %d documents contaminated (%s)", sum(contaminated), dc.action)

    dropped_mask = [c and dc.action == "dropped" for c in contaminated]
    kept_cols = docs.append_column("split", pa.array(split_of, pa.string()))
    kept_cols = kept_cols.append_column("contamination", pa.array(contamination, pa.float64()))
    kept_cols = kept_cols.append_column("contaminated", pa.array(contaminated, pa.bool_()))
    for i in range(n_in):
        if not dropped_mask[i]:
            entries.append(LedgerEntry(ids[i], STAGE, "split", split_of[i], keys[i]))

    split_arr = kept_cols.column("split")
    keep = pa.array([not d for d in dropped_mask], pa.bool_())
    summary: dict[str, Any] = {"splits": {}, "by_source": {}}
    n_out = 0
    sources = docs.column("source").to_pylist() if n_in else []
    chars = pc.utf8_length(docs.column("text")).to_pylist() if n_in else []
    by_source: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: {s: {"documents": 0, "chars": 0} for s in SPLITS})
    for name in SPLITS:
        mask = pc.and_(pc.equal(split_arr, name), keep) if n_in else pa.array([], pa.bool_())
        part = kept_cols.filter(mask) if n_in else kept_cols
        write_parquet(part, ctx.out / f"{name}.parquet")
        n_out += part.num_rows
    for i in range(n_in):
        if not dropped_mask[i]:
            slot = by_source[sources[i]][split_of[i]]
            slot["documents"] += 1
            slot["chars"] += chars[i]
    total_docs = max(n_in - sum(dropped_mask), 1)
    total_chars = max(sum(c for c, d in zip(chars, dropped_mask, strict=True) if not d), 1)
    for name in SPLITS:
        d = sum(v[name]["documents"] for v in by_source.values())
        c = sum(v[name]["chars"] for v in by_source.values())
        summary["splits"][name] = {"documents": d, "chars": c, "fraction": round(d / total_docs, 6),
                                   "char_fraction": round(c / total_chars, 6), "target": fractions[SPLITS.index(name)]}
    for src, per in sorted(by_source.items()):
        n_src = max(sum(v["documents"] for v in per.values()), 1)
        summary["by_source"][src] = {s: {**v, "fraction": round(v["documents"] / n_src, 6)} for s, v in per.items()}
    summary.update(settings)
    write_json(summary, ctx.out / "splits.json")
    write_parquet(ledger_table(entries), ctx.ledger_dir / "split.parquet")
    write_json({"settings": settings}, ctx.out / "state.json")

    n_contaminated = sum(contaminated)
    n_dropped = sum(dropped_mask)
    examples = [ids[i] for i in range(n_in) if contaminated[i]][:EXAMPLES]
    seconds = time.perf_counter() - started
    ctx.log.info("split %d documents: %s; %d contaminated documents %s", n_in,
                 ", ".join(f"{k} {v['documents']}" for k, v in summary["splits"].items()), n_contaminated, dc.action)
    eval_shares = [contamination[i] for i in range(n_in) if split_of[i] != "train"]
    return {
        "documents_in": n_in,
        "documents_out": n_out,
        "dropped": n_dropped,
        "quarantined": 0,
        "drops_by_reason": {"contaminated": n_dropped} if n_dropped else {},
        "examples_by_reason": {"contaminated": examples} if n_dropped else {},
        "flagged": n_contaminated if dc.action == "flagged" else 0,
        "contaminated_train_documents": sum(1 for i in range(n_in) if contaminated[i] and split_of[i] == "train"),
        "contaminated_eval_documents": sum(1 for i in range(n_in) if contaminated[i] and split_of[i] != "train"),
        "max_eval_contamination": max(eval_shares, default=0.0),
        "eval_task_items": len(eval_items),
        "eval_file_problems": eval_problems,
        "splits": summary["splits"],
        "by_source": summary["by_source"],
        "group_by": sp.group_by,
        "groups": len(set(keys)),
        "new_parts": 0,
        "seconds": round(seconds, 3),
        "docs_per_s": round(n_in / seconds, 1) if seconds > 0 else 0.0,
    }
