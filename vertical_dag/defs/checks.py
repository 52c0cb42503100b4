"""Quality gates as blocking asset checks: one check per expectation of the stage's suite.

The gate itself runs inside the stage command (`vertical-dag run` fails when it fails, so `dvc repro` does
too); here we only read its result, data/gates/<stage>.json, and turn each expectation into a check result.
A failed check has ERROR severity and is blocking, so Dagster does not run anything downstream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg

from ..project import Project
from .pipeline import StageNode

SUMMARY_CHECK = "quality_gate"  # the whole gate as one check, for a stage whose suite names no checks


def check_names(stage: str) -> list[str]:
    """The stage's expectation names, fixed up front so Dagster can declare them before anything runs."""
    from ..quality.suites import gate_check_names

    return list(dict.fromkeys(gate_check_names(stage))) or [
        SUMMARY_CHECK
    ]  # a stage without a suite: its gate as one


def check_specs(node: StageNode) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            name, asset=node.asset, blocking=True, description=f"quality gate of stage `{node.name}`: {name}"
        )
        for name in check_names(node.name)
    ]


def gate_file(project: Project, stage: str) -> Path:
    return project.gates_dir / f"{stage}.json"


def read_gate(project: Project, stage: str, since: float | None = None) -> dict[str, Any] | None:
    """The stage's gate result, or None when absent (or older than `since`, a time.time())."""
    path = gate_file(project, stage)
    if not path.is_file() or (since is not None and path.stat().st_mtime < since - 1):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else value
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def gate_table(gate: dict[str, Any]) -> str:
    rows = [
        f"| {'ok' if e.get('success') else '**FAIL**'} | {e.get('name')} | {e.get('column') or ''} "
        f"| {_short(e.get('observed'))} | {_short(e.get('bound'))} |"
        for e in gate.get("expectations", [])
    ]
    head = "| result | expectation | column | observed | bound |\n|---|---|---|---|---|\n"
    return head + ("\n".join(rows) if rows else "| ok | (no expectations for this stage) | | | |")


def check_results(
    node: StageNode, gate: dict[str, Any] | None, wanted: set[str] | None = None
) -> list[dg.AssetCheckResult]:
    """One result per declared check found in the gate. Checks the gate did not evaluate (a skipped gate,
    an expectation it no longer has) report nothing rather than a pass."""
    if gate is None:
        return []
    by_name = {e.get("name"): e for e in gate.get("expectations", [])}
    results = []
    for name in check_names(node.name):
        if wanted is not None and name not in wanted:
            continue
        if name == SUMMARY_CHECK:
            ok = bool(gate.get("success"))
            meta: dict[str, Any] = {"gate": dg.MetadataValue.md(gate_table(gate))}
            failed = [str(e.get("name")) for e in gate.get("expectations", []) if not e.get("success")]
            text = f"gate skipped: {gate['skipped']}" if gate.get("skipped") else "gate passed"
            text = text if ok else "gate failed: " + ", ".join(failed)
        elif name in by_name:
            e = by_name[name]
            ok = bool(e.get("success"))
            meta = {
                "observed": _short(e.get("observed"), 500),
                "bound": _short(e.get("bound"), 200),
                "column": str(e.get("column") or ""),
            }
            text = f"{e.get('description') or name}: observed {_short(e.get('observed'))}, bound {_short(e.get('bound'))}"
        else:
            continue
        results.append(
            dg.AssetCheckResult(
                asset_key=node.asset,
                check_name=name,
                passed=ok,
                metadata=meta,
                description=text,
                severity=dg.AssetCheckSeverity.ERROR,
            )
        )
    return results
