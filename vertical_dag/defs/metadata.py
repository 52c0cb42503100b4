"""What a user sees on a materialization: the stage's metrics.json, a few sample documents, the run's timing.

Metrics are read from disk after `dvc repro`, never from the stage process, because DVC skips an unchanged
stage without running it; the numbers shown are then those of the run recorded in dvc.lock.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from ..project import Project
from .pipeline import StageNode
from .resources import DvcRun

COUNT_KEYS = ("documents_in", "documents_out", "dropped", "quarantined", "new_parts", "files_new")
MAX_NUMBERS = 40


def read_metrics(project: Project, stage: str) -> dict[str, Any]:
    """The stage's quality metrics and its performance figures (kept apart for DVC, shown together here)."""
    from ..stages.metrics import perf_file

    out: dict[str, Any] = {}
    for path in (project.metrics_file(stage), project.root / perf_file(stage)):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        out.update(data if isinstance(data, dict) else {})
    return out


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def flat_numbers(metrics: dict[str, Any], prefix: str = "", depth: int = 2) -> dict[str, float | int]:
    """Nested numbers as dotted keys ('perplexity.finetuned'), a few levels deep."""
    out: dict[str, float | int] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if _is_num(value):
            out[name] = value
        elif isinstance(value, dict) and depth > 0:
            out.update(flat_numbers(value, f"{name}.", depth - 1))
    return out


def md_table(rows: list[list[Any]], header: list[str]) -> str:
    cell = lambda v: str(v).replace("|", "/").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def sample_documents(out: Path, n: int = 3, chars: int = 80) -> str | None:
    """The first few documents of the first Parquet part under `out` (ledgers excluded)."""
    parts = sorted(p for p in out.rglob("*.parquet") if "ledger" not in p.parts) if out.is_dir() else []
    for part in parts:
        try:
            schema = pq.read_schema(part)
            cols = [c for c in ("doc_id", "batch", "split", "text") if c in schema.names]
            if "text" not in cols:
                continue
            rows = pq.read_table(part, columns=cols).slice(0, n).to_pylist()
        except Exception:  # a sample is a courtesy; an unreadable part must not fail the asset
            continue
        if rows:
            body = [
                [r[c] if c != "text" else r[c][:chars] + ("..." if len(r[c]) > chars else "") for c in cols]
                for r in rows
            ]
            return md_table(body, cols) + f"\n\nfrom `{part.relative_to(out)}`"
    return None


def _sampled(rows: list[list[Any]], most: int = 20) -> list[list[Any]]:
    stride = max(1, -(-len(rows) // most))
    picked = rows[::stride]
    return picked if picked[-1] is rows[-1] else [*picked, rows[-1]]


def plot_tables(project: Project, node: StageNode) -> dict[str, str]:
    """The stage's DVC plots (CSV) as Markdown tables: a loss curve (step, loss, ...) or a small bar chart's data."""
    tables: dict[str, str] = {}
    for rel in node.plots:
        path = project.root / rel
        if path.suffix != ".csv" or not path.is_file():
            continue
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        if len(rows) < 2:
            continue
        header, body = rows[0], rows[1:]
        name = "loss_curve" if "loss" in header and "loss_curve" not in tables else f"plot_{path.stem}"
        tables[name] = md_table(_sampled(body), header)
    return tables


def stage_metadata(
    project: Project, node: StageNode, metrics: dict[str, Any], run: DvcRun | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "dvc_stage": node.name,
        "output": dg.MetadataValue.path(str(project.root / node.out)),
    }
    if run is not None:
        meta["dvc_action"] = "skipped (unchanged)" if run.skipped else "ran"
        meta["dvc_seconds"] = dg.MetadataValue.float(run.seconds)
    for key in COUNT_KEYS:
        if _is_num(metrics.get(key)):
            meta[key] = dg.MetadataValue.int(int(metrics[key]))
    if "documents_out" in metrics:
        meta["dagster/row_count"] = dg.MetadataValue.int(int(metrics["documents_out"]))
    drops = metrics.get("drops_by_reason")
    if isinstance(drops, dict) and drops:
        rows = sorted(drops.items(), key=lambda kv: -kv[1] if _is_num(kv[1]) else 0)
        meta["drops_by_reason"] = dg.MetadataValue.md(
            md_table([list(r) for r in rows], ["reason", "documents"])
        )
    if node.name == "dedup" and "duplicate_rate" not in metrics and metrics.get("documents_in"):
        dups = sum(v for k, v in (drops or {}).items() if "dup" in k and _is_num(v))
        meta["duplicate_rate"] = dg.MetadataValue.float(round(dups / metrics["documents_in"], 4))
    for key in ("split_sizes", "splits", "documents_by_split"):
        if isinstance(metrics.get(key), dict):
            rows = []
            for split, v in metrics[key].items():  # {split: n} or {split: {documents, fraction, ...}}
                info = v if isinstance(v, dict) else {"documents": v}
                rows.append([split, info.get("documents", ""), info.get("fraction", "")])
            meta["split_sizes"] = dg.MetadataValue.md(md_table(rows, ["split", "documents", "fraction"]))
            break
    numbers = {k: v for k, v in flat_numbers(metrics).items() if k not in meta}
    if (
        not any("per_s" in k or "per_second" in k for k in numbers)
        and metrics.get("seconds")
        and metrics.get("documents_in")
    ):
        meta["docs_per_s"] = dg.MetadataValue.float(round(metrics["documents_in"] / metrics["seconds"], 1))
    for key in sorted(numbers, key=lambda k: ("perplexity" not in k and "ppl" not in k, k))[:MAX_NUMBERS]:
        meta[key] = (
            dg.MetadataValue.float(float(numbers[key])) if isinstance(numbers[key], float) else numbers[key]
        )
    for name, table in plot_tables(project, node).items():
        meta[name] = dg.MetadataValue.md(table)
    if not node.is_training:
        sample = sample_documents(project.root / node.out)
        if sample:
            meta["sample_documents"] = dg.MetadataValue.md(sample)
    if node.name == "evaluate":
        out = project.root / node.out
        reports = sorted(out.glob("*.html")) + sorted(out.glob("*.md")) if out.is_dir() else []
        if reports:
            meta["report"] = dg.MetadataValue.path(str(reports[0]))
    meta["metrics_file"] = dg.MetadataValue.path(str(project.metrics_file(node.name)))
    return meta
