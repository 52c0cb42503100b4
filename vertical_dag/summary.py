"""A one-screen summary of a run: documents kept and dropped per stage, gate results, the model headline.

`dvc metrics show` prints every key of every stage in one table hundreds of columns wide; this reads the
same files (data/metrics/<stage>.json, data/gates/<stage>.json) and prints what a user checks first.
"""

from __future__ import annotations

from typing import Any

from .project import Project
from .records import read_json
from .stages import STAGES


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


def _gate(project: Project, stage: str) -> str:
    g = read_json(project.gates_dir / f"{stage}.json", None)
    if not g:
        return "-"
    return "pass" if g.get("success") else "FAIL"


def summary(project: Project) -> str:
    """The summary as text; stages that have not run are listed as such."""
    rows = [("stage", "in", "kept", "dropped", "quarantined", "gate", "top drop reasons")]
    for stage in STAGES:
        m = read_json(project.root / STAGES[stage].metrics_file, None)
        if m is None:
            rows.append((stage, "not run", "", "", "", "", ""))
            continue
        reasons = sorted((m.get("drops_by_reason") or {}).items(), key=lambda kv: -kv[1])[:3]
        rows.append((stage, _num(m.get("documents_in")), _num(m.get("documents_out")), _num(m.get("dropped")),
                     _num(m.get("quarantined")), _gate(project, stage), ", ".join(f"{k} {v:,}" for k, v in reasons)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]

    ev = read_json(project.root / STAGES["evaluate"].metrics_file, None)
    if ev and ev.get("models"):
        lines += ["", "model        domain bits/char  general bits/char  task accuracy (CI)"]
        for name, row in ev["models"].items():
            ci = row.get("task_accuracy_ci") or [None, None]
            lines.append(f"{name:<12} {_num(row.get('domain_bpc')):<17} {_num(row.get('general_bpc')):<18} "
                         f"{_num(row.get('task_accuracy'))} [{_num(ci[0])}, {_num(ci[1])}]")
        for name, c in (ev.get("comparisons") or {}).items():
            lines.append(f"{name}: {_num(c.get('diff'))} [{_num(c['ci'][0])}, {_num(c['ci'][1])}]")
        lines.append(f"report: {STAGES['evaluate'].out}/report.html")
    return "\n".join(lines)
