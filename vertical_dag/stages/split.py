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
ledger/split.parquet (a `split` row per kept document, dropped/redacted/flagged rows for contamination).
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
from ..text.decontaminate import (
    CUT,
    DROPPED,
    FLAGGED,
    Contamination,
    decontaminate,
    resolve_settings,
    spec_and_rule,
)
from ..text.splitting import SPLITS, assign, family_ids_of, group_keys
from . import STAGES
from .context import StageContext
from .split_card import write_card

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


def _column(docs: pa.Table, name: str) -> list[Any]:
    return docs.column(name).to_pylist() if name in docs.column_names else [None] * docs.num_rows


def decontamination_settings(params: Any) -> dict[str, Any]:
    """The decontamination settings in force: the preset (split.decontaminate.preset, auto: project.domain)
    with the keys params set. The split gate measures leakage with the same settings."""
    dc = params.split.decontaminate
    preset = params.project.domain if dc.preset == "auto" else dc.preset
    return {"preset": preset, **resolve_settings(preset, dc.model_dump())}


def _protected(ctx: StageContext, same_settings: bool) -> dict[str, str]:
    """doc_id -> text of the last run's train documents, as trained on (settings unchanged only)."""
    old = ctx.out / "train.parquet"
    if not same_settings or not old.exists():
        return {}
    t = pq.read_table(old, columns=["doc_id", "text"])
    return dict(zip(t.column("doc_id").to_pylist(), t.column("text").to_pylist(), strict=True))


def _decontaminate(ctx: StageContext, ids: list[str], texts: list[str], split_of: list[str], families: list[str],
                   protected: dict[str, str], settings: dict[str, Any]) -> tuple[Contamination | None, list, dict]:
    """Run decontamination on the documents it concerns; (result aligned with all documents, eval items,
    eval file problems). None when switched off."""
    sp, dc = ctx.params.split, ctx.params.split.decontaminate
    if not (dc.enabled and sp.enabled and ids):
        return None, [], {}
    eval_items, problems = read_eval_files(ctx.project.root, dc.extra_eval_files, ctx.log)
    spec, rule = spec_and_rule(settings)
    sel = [i for i in range(len(ids)) if dc.internal or split_of[i] == "train"]
    found = decontaminate([ids[i] for i in sel], [texts[i] for i in sel], [split_of[i] != "train" for i in sel],
                          protected, eval_items, spec, rule, [families[i] for i in sel])
    if len(sel) < len(ids):  # evaluation splits left out: clean, measured by the gate only
        full = Contamination(["clean"] * len(ids), [0.0] * len(ids), [0] * len(ids), [None] * len(ids), list(texts),
                             [0] * len(ids), [0.0] * len(ids), found.boilerplate_ngrams, found.eval_docs_sharing_rare)
        for k, i in enumerate(sel):
            for name in ("outcome", "coverage", "shared", "ref", "texts", "cut_chars", "share"):
                getattr(full, name)[i] = getattr(found, name)[k]
        found = full
    return found, eval_items, problems


def _ledger(ids: list[str], split_of: list[str], keys: list[str], found: Contamination | None) -> list[LedgerEntry]:
    entries = []
    for i, doc_id in enumerate(ids):
        outcome = found.outcome[i] if found else "clean"
        if outcome in _LEDGER_ACTION:
            side = "train" if split_of[i] == "train" else f"{split_of[i]} (overlaps a document already in train)"
            detail = {"side": side, "coverage": found.coverage[i], "rare_shared_ngrams": found.shared[i]}
            if outcome == CUT:
                detail["chars_cut"] = found.cut_chars[i]
            entries.append(LedgerEntry(doc_id, STAGE, _LEDGER_ACTION[outcome], _REASON[outcome], json.dumps(detail),
                                       found.ref[i]))
        if outcome != DROPPED:
            entries.append(LedgerEntry(doc_id, STAGE, "split", split_of[i], keys[i]))
    return entries


def run(ctx: StageContext) -> dict[str, Any]:
    started = time.perf_counter()
    sp = ctx.params.split
    seed = sp.seed if sp.seed is not None else ctx.params.project.seed
    fractions = (sp.fractions.train, sp.fractions.validation, sp.fractions.test)
    docs = read_parts(ctx.project.root / STAGES["normalize"].out / "parts")
    n_in = docs.num_rows
    dc_settings = decontamination_settings(ctx.params)
    settings = {"seed": seed, "group_by": sp.group_by, "fractions": list(fractions)}
    legacy = ctx.out / "state.json"  # where earlier versions kept it: it stops `datasets` from loading the folder
    previous = (read_json(ctx.out / STATE_FILE, default=None) or read_json(legacy, default={}) or {}).get("settings")
    if previous and previous != settings:
        ctx.log.warning("split settings changed (%s -> %s): documents may change split", previous, settings)

    ids = _column(docs, "doc_id")
    keys = group_keys(ids, _column(docs, "cluster_id"), _column(docs, "meta"), sp.group_by, _column(docs, "family_id"))
    if not sp.enabled:  # no held-out data: everything trains, nothing is decontaminated
        fractions = (1.0, 0.0, 0.0)
    split_of = [assign(seed, k, fractions) for k in keys]
    texts = _column(docs, "text")
    families = family_ids_of(ids, _column(docs, "cluster_id"), _column(docs, "family_id"))
    found, eval_items, eval_problems = _decontaminate(ctx, ids, texts, split_of, families,
                                                      _protected(ctx, previous == settings), dc_settings)
    outcome = found.outcome if found else ["clean"] * n_in
    dropped = [o == DROPPED for o in outcome]
    out_cols = docs
    if found and CUT in outcome:
        out_cols = docs.set_column(docs.column_names.index("text"), "text", pa.array(found.texts, pa.string()))
    out_cols = out_cols.append_column("split", pa.array(split_of, pa.string()))
    out_cols = out_cols.append_column("contamination", pa.array(found.share if found else [0.0] * n_in, pa.float64()))
    contaminated = [o in (DROPPED, FLAGGED) for o in outcome]  # cut documents are clean afterwards
    out_cols = out_cols.append_column("contaminated", pa.array(contaminated, pa.bool_()))
    keep = pa.array([not d for d in dropped], pa.bool_())
    counts = {}
    for name in SPLITS:
        part = out_cols.filter(pc.and_(pc.equal(out_cols.column("split"), name), keep)) if n_in else out_cols
        write_parquet(part, ctx.out / f"{name}.parquet")
        counts[name] = part.num_rows
    summary = _summary(out_cols.filter(keep) if n_in else out_cols, fractions)
    summary.update(settings)
    write_json(summary, ctx.out / "splits.json")
    write_parquet(ledger_table(_ledger(ids, split_of, keys, found)), ctx.ledger_dir / "split.parquet")
    write_json({"settings": settings}, ctx.out / STATE_FILE)
    legacy.unlink(missing_ok=True)
    decon = _decon_metrics(ids, split_of, found, dc_settings, eval_items)
    write_card(ctx.out, ctx.params.project.name, summary, decon, n_in)

    seconds = time.perf_counter() - started
    n_dropped = sum(dropped)
    ctx.log.info("split %d documents: %s; decontamination: %d cut, %d dropped, %d flagged", n_in,
                 ", ".join(f"{k} {v}" for k, v in counts.items()), decon["cut"], decon["dropped"], decon["flagged"])
    return {
        "documents_in": n_in,
        "documents_out": sum(counts.values()),
        "dropped": n_dropped,
        "quarantined": 0,
        "drops_by_reason": {"contaminated": n_dropped} if n_dropped else {},
        "examples_by_reason": {"contaminated": [ids[i] for i in range(n_in) if dropped[i]][:EXAMPLES]} if n_dropped else {},
        "flagged": decon["flagged"],
        "redacted": decon["cut"],
        "decontamination": decon,
        "contaminated_train_documents": sum(1 for i in range(n_in) if contaminated[i] and split_of[i] == "train"),
        "contaminated_eval_documents": sum(1 for i in range(n_in) if contaminated[i] and split_of[i] != "train"),
        "max_eval_contamination": max((found.share[i] for i in range(n_in) if split_of[i] != "train" and not dropped[i]),
                                      default=0.0) if found else 0.0,
        "eval_task_items": len(eval_items),
        "eval_file_problems": eval_problems,
        "splits": summary["splits"],
        "by_source": summary["by_source"],
        "group_by": sp.group_by,
        "groups": len(set(keys)),
        "families": len(set(families)),
        "new_parts": 0,
        "seconds": round(seconds, 3),
        "docs_per_s": round(n_in / seconds, 1) if seconds > 0 else 0.0,
    }


def _summary(kept: pa.Table, fractions: tuple[float, ...]) -> dict[str, Any]:
    """Documents and characters per split, overall and per source."""
    by_source: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: {s: {"documents": 0, "chars": 0} for s in SPLITS})
    chars = pc.utf8_length(kept.column("text")).to_pylist() if kept.num_rows else []
    for src, split, n_chars in zip(_column(kept, "source"), _column(kept, "split"), chars, strict=True):
        slot = by_source[src][split]
        slot["documents"] += 1
        slot["chars"] += n_chars
    total_docs, total_chars = max(kept.num_rows, 1), max(sum(chars), 1)
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


def _decon_metrics(ids: list[str], split_of: list[str], found: Contamination | None, settings: dict[str, Any],
                   eval_items: list) -> dict[str, Any]:
    """How much decontamination removed and why, with examples."""
    out: dict[str, Any] = {"settings": settings, "cut": 0, "dropped": 0, "flagged": 0, "chars_cut": 0,
                           "boilerplate_ngrams": 0, "eval_docs_sharing_rare_ngrams": 0, "examples": []}
    if found is None:
        return out
    by = Counter(found.outcome)
    out.update(cut=by[CUT], dropped=by[DROPPED], flagged=by[FLAGGED], chars_cut=sum(found.cut_chars),
               boilerplate_ngrams=found.boilerplate_ngrams, eval_docs_sharing_rare_ngrams=found.eval_docs_sharing_rare,
               against={"validation_test": sum(s != "train" for s in split_of), "eval_file_items": len(eval_items)})
    for outcome in (DROPPED, CUT, FLAGGED):
        hits = [i for i, o in enumerate(found.outcome) if o == outcome][:EXAMPLES]
        out["examples"] += [{"doc_id": ids[i], "split": split_of[i], "outcome": outcome, "coverage": found.coverage[i],
                             "rare_shared_ngrams": found.shared[i], "chars_cut": found.cut_chars[i],
                             "overlaps": found.ref[i]} for i in hits]
    return out
