"""A model card (README.md) for a trained checkpoint: where it came from, on what, how, and how well."""

from __future__ import annotations

import json
from typing import Any


def _table(rows: dict[str, Any]) -> list[str]:
    out = ["| key | value |", "|---|---|"]
    for k, v in rows.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        out.append(f"| {k} | {str(v).replace('|', '/')} |")
    return out


def model_card(*, title: str, base: dict[str, Any], data: dict[str, Any], params: dict[str, Any],
               metrics: dict[str, Any], gates: dict[str, Any], notes: list[str] | None = None) -> str:
    """Markdown with YAML front matter (base model, metrics) so hubs and humans both read it."""
    front = {"base_model": base.get("source", ""), "library_name": "transformers", "tags": ["continued-pretraining"]}
    lines = ["---", *(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in front.items()), "---", "", f"# {title}", ""]
    lines += ["Continued (domain-adaptive) pretraining of the base model below on the project's train split.", ""]
    lines += ["## Base model", "", *_table({k: v for k, v in base.items() if k != "warnings"}), ""]
    for w in base.get("warnings", []):
        lines += [f"> warning: {w}", ""]
    lines += ["## Data", "", *_table(data), ""]
    lines += ["## Training parameters", "", *_table(params), ""]
    lines += ["## Metrics", "", *_table(metrics), ""]
    lines += ["## Quality gates", ""]
    if gates:
        for stage, g in gates.items():
            lines.append(f"- `{stage}`: {'passed' if g.get('success') else 'FAILED'}"
                         + "".join(f"; {e['name']}={'ok' if e['success'] else 'FAIL'}" for e in g.get("expectations", [])))
    else:
        lines.append("- none recorded")
    lines.append("")
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines)
