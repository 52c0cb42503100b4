"""Writing a stage's numbers: quality metrics for DVC, performance figures apart, drops as a plot table.

`dvc metrics diff` and `dvc exp show` compare what a run *produced* (documents kept, drops by reason,
perplexities). Timings, throughput and memory change on every run and would show as changes, so they go to
data/perf/<stage>.json instead (a plain, uncached output), and Dagster shows both.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..project import Project
from ..records import write_json, write_text
from . import Stage

EXAMPLES = 5
_PERF = re.compile(r"(^|_)(seconds|per_s|per_second|rss|mb_per_s|mfu|throughput)(_|$)|^peak_|_mb$")


def is_perf_key(key: str) -> bool:
    return bool(_PERF.search(key))


def split_perf(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(quality metrics, performance figures) by key, top level only."""
    quality = {k: v for k, v in metrics.items() if not is_perf_key(k)}
    perf = {k: v for k, v in metrics.items() if is_perf_key(k)}
    return quality, perf


def perf_file(stage: str) -> str:
    return f"data/perf/{stage}.json"


def drops_plot_file(stage: str) -> str:
    return f"data/plots/{stage}_drops.csv"


def write_stage_metrics(project: Project, spec: Stage, metrics: dict[str, Any]) -> None:
    quality, perf = split_perf(metrics)
    write_json(quality, project.root / spec.metrics_file)
    write_json(perf, project.root / perf_file(spec.name))
    if not spec.training:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["reason", "documents"])
        for reason, n in (metrics.get("drops_by_reason") or {}).items():
            w.writerow([reason, n])
        write_text(buf.getvalue(), project.root / drops_plot_file(spec.name))


@dataclass
class ReasonCounts:
    """Documents removed (or flagged) per reason, with the first few doc ids of each: the one tally every
    stage keeps, merged across parts, runs and workers."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, doc_id: str | None = None, n: int = 1) -> None:
        self.counts[reason] += n
        if doc_id is not None:
            ex = self.examples.setdefault(reason, [])
            if len(ex) < EXAMPLES:
                ex.append(doc_id)

    def merge(self, other: ReasonCounts | dict[str, Any]) -> ReasonCounts:
        if isinstance(other, dict):
            other = ReasonCounts.from_json(other)
        self.counts.update(other.counts)
        for reason, ids in other.examples.items():
            ex = self.examples.setdefault(reason, [])
            ex.extend(ids[: EXAMPLES - len(ex)])
        return self

    def total(self) -> int:
        return sum(self.counts.values())

    def by_reason(self) -> dict[str, int]:
        """Most frequent first, then by name (stable for DVC diffs)."""
        return dict(sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def to_json(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "examples": self.examples}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> ReasonCounts:
        d = d or {}
        return cls(Counter(d.get("counts", {})), {k: list(v) for k, v in d.get("examples", {}).items()})


def contract_counts(documents_in: int, documents_out: int, dropped: ReasonCounts,
                    quarantined: ReasonCounts | None = None) -> dict[str, Any]:
    """The numbers every stage reports under the data contract (in = out + dropped + quarantined)."""
    quarantined = quarantined or ReasonCounts()
    both = ReasonCounts().merge(dropped).merge(quarantined)
    return {
        "documents_in": documents_in,
        "documents_out": documents_out,
        "dropped": dropped.total(),
        "quarantined": quarantined.total(),
        "drops_by_reason": both.by_reason(),
        "examples_by_reason": dict(sorted(both.examples.items())),
    }
