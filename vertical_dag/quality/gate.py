"""Run a stage's quality gate and write its result to data/gates/<stage>.json and a short .md report.

The runner (stages/context.py) calls `run_gate` after a stage wrote its metrics; a failed gate raises
GateFailed there, so `vertical-dag run` exits 1 and `dvc repro` stops without recording the outputs.
The Dagster adapter reads the same JSON (`load_gate_result`) and reports one asset check per
`gate_check_names(stage)`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..params import Params, load_params
from ..project import Project
from ..records import read_json, write_json, write_text
from ..stages import DATA_STAGES, STAGES
from ..text.hash_spill import HashSpill
from . import part_profile, profile
from .contamination import max_families, measure, measure_bucket, ngram_spec, spill_texts
from .split_profile import read_profile
from .suites import checks_for, expected_fractions, gate_check_names

__all__ = ["GateResult", "ExpectationResult", "run_gate", "skip_gate", "check_stage", "validate_stage", "load_gate_result",
           "gate_check_names", "gate_file"]

log = logging.getLogger("vertical_dag.quality")



@dataclass
class ExpectationResult:
    name: str
    column: str | None
    success: bool
    observed: Any
    bound: Any
    description: str = ""
    expectation: str = ""  # the Great Expectations expectation type


@dataclass
class GateResult:
    stage: str
    suite: str
    expectations: list[ExpectationResult] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None  # why nothing was validated, when the gate was switched off

    @property
    def success(self) -> bool:
        return all(e.success for e in self.expectations)

    def failed(self) -> list[ExpectationResult]:
        return [e for e in self.expectations if not e.success]

    def failure_message(self) -> str:
        """One line per failed expectation: check, GE expectation, column, observed value, bound and what the
        check means (where it says what to change)."""
        return "\n".join(
            f"{e.name} ({e.expectation}{', column ' + e.column if e.column else ''}): "
            f"observed {_short(e.observed)}; bound {e.bound}" + (f"; {e.description}" if e.description else "")
            for e in self.failed()
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "success": self.success,
            "suite": self.suite,
            "expectations": [asdict(e) for e in self.expectations],
            "seconds": self.seconds,
            **({"skipped": self.skipped} if self.skipped else {}),
        }


def _short(v: Any, limit: int = 300) -> str:
    s = json.dumps(v, ensure_ascii=False, default=str)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def gate_file(project: Project, stage: str) -> Path:
    return project.gates_dir / f"{stage}.json"


# ---------------------------------------------------------------- profile tables per stage


def stage_tables(stage: str, project: Project, params: Params, metrics: dict[str, Any]) -> dict[str, Any]:
    """The profile tables a stage's suite validates."""
    if stage in DATA_STAGES:
        return _data_tables(stage, project, params, metrics)
    if stage == "pretrain":
        return {**_pretrain_tables(metrics), **_model_conservation(stage, project, metrics)}
    if stage == "finetune":
        return _model_conservation(stage, project, metrics)
    if stage == "evaluate":
        return _evaluate_tables(metrics)
    return {}


def _documents_args(stage: str, project: Project, params: Params) -> dict[str, Any]:
    """What profile.documents (and part_profiles) take for the stage's gate."""
    out = project.root / STAGES[stage].out
    needed = _document_columns(stage, params)
    pii = params.normalize.pii if stage == "normalize" else False
    return {"out": out, "pii": pii, "text_hash": "canonical_hash" in needed,
            "sidecars": _sidecars(stage, out, params, pii), "columns": needed}


def read_files(stage: str, project: Project, params: Params) -> None:
    """The per-file reads of a part stage's gate (sidecars, each part's profile rows, ledger actions, the
    upstream stage's row counts) without building its tables: what the gate process does while the stage
    works, so that the gate then reads only what changed (file_memo.py)."""
    if stage not in PART_PROFILED:
        return
    spec = STAGES[stage]
    args = _documents_args(stage, project, params)
    profile.part_profiles(files=profile.doc_files(args["out"]), **args)
    profile.ledger_counts(args["out"])
    if spec.reads:
        profile.count_docs(project.root / STAGES[spec.reads[0]].out)


def _data_tables(stage: str, project: Project, params: Params, metrics: dict[str, Any]) -> dict[str, Any]:
    spec = STAGES[stage]
    out = project.root / spec.out
    docs = profile.documents(**_documents_args(stage, project, params))
    if not spec.reads:  # reads raw files: its input count is what it reports
        rows_in = int(metrics.get("documents_in") or 0)
    else:  # the registry's lineage: the documents the upstream stage kept
        rows_in = profile.count_docs(project.root / STAGES[spec.reads[0]].out)
    summary = profile.conservation(rows_in, out, metrics, rows_out=len(docs))
    tables = {"documents": docs, "summary": summary, "conservation": summary}
    if stage == "split":
        docs["split"] = docs["split"].fillna(docs["part"])  # no split column: the file name is the split
        if "contamination" not in docs:  # no profile of these files from the split stage: measure from their texts
            docs["contamination"] = _measure_from_texts(out, docs, params)
        g = params.gates
        clusters, families = profile.split_pairs(docs, "cluster_id"), profile.split_pairs(docs, "family_id")
        tables["clusters"] = profile.splits_per_group(clusters, "cluster_id")
        # with split.group_by cluster_id, families are not what the split keeps together: clusters stand in
        kept_together = clusters if params.split.group_by == "cluster_id" else families
        tables["families"] = profile.splits_per_group(kept_together, "family_id")
        tables["fractions"] = profile.split_fractions(families, len(docs), expected_fractions(params),
                                                      g.split_fraction_tolerance, g.split_fraction_sigmas)
    return tables


# stages whose workers write a profile sidecar beside each part (part_profile.py)
PART_PROFILED = ("ingest", "dedup", "normalize")


def _sidecars(stage: str, out: Path, params: Params, pii: Any) -> dict[Path, Any] | None:
    """The profile rows the stage wrote while writing its files, for the files they still describe."""
    files = profile.doc_files(out)
    if stage == "split":
        tables = read_profile(out, files, _settings(params))
        return {p: tables[p.stem] for p in files} if tables is not None else None
    if stage in PART_PROFILED:
        return part_profile.read_sidecars(out, files, part_profile.settings(
            profile.pii_settings(pii) if pii is not False else None))
    return None


def _document_columns(stage: str, params: Params) -> set[str]:
    """The per-document columns the stage's checks and summary tables read (text hashes only if one does)."""
    cols = {"doc_id", "part", "contamination", "pii_found"}
    for c in checks_for(stage, params):
        if c.table == "documents":
            cols |= {c.column, c.id_column, *(c.rows or {})}
    if stage == "split":  # the clusters, families and fractions tables, the contamination measure
        cols |= {"split", "cluster_id", "family_id"}
    return cols - {None}


def _settings(params: Params) -> dict[str, Any]:
    from ..stages.split import decontamination_settings

    return decontamination_settings(params)


def _measure_from_texts(out: Path, docs: Any, params: Params) -> list[float]:
    """The contamination measure (contamination.py) over the split files' texts, streamed and hashed here."""
    import pandas as pd

    is_eval = (docs["split"] != "train").to_numpy()
    families = pd.factorize(docs["family_id"])[0].astype("int64")
    with HashSpill(out.parent) as spill:
        spill_texts(spill, profile.texts(out), ngram_spec(params))
        mf = max_families(params)
        return measure((measure_bucket(h, d, is_eval, families, mf) for h, d in spill.buckets()), len(is_eval))


def _model_conservation(stage: str, project: Project, metrics: dict[str, Any]) -> dict[str, Any]:
    """Training stages read documents/items the runner does not see: their count in is what the stage reports,
    out and removed are checked against the items it kept and its ledger."""
    out = project.root / STAGES[stage].out
    rows_in = int(metrics.get("documents_in") or 0)
    rows_out = int(metrics.get("documents_out") or 0)
    return {"conservation": profile.conservation(rows_in, out, metrics, rows_out=rows_out)}


def _pretrain_tables(metrics: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    keys = ("val_perplexity_base", "val_perplexity_final")
    vals = {k: profile._num(metrics.get(k)) for k in keys}
    gain = vals[keys[0]] - vals[keys[1]] if None not in vals.values() else None
    return {"metrics": profile.model_metrics(vals), "summary": pd.DataFrame([{**vals, "perplexity_gain": gain}])}


def _evaluate_tables(metrics: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    models = metrics.get("models") or {}
    wanted = {"base": ("domain_bpc", "general_bpc", "task_accuracy"), "pretrained": ("domain_bpc", "general_bpc"),
              "finetuned": ("task_accuracy",)}
    vals = {f"{m}_{k}": profile._num((models.get(m) or {}).get(k)) for m, ks in wanted.items() for k in ks}

    def diff(a: str, b: str) -> float | None:
        return None if vals[a] is None or vals[b] is None else vals[a] - vals[b]

    row = {
        **vals,
        "domain_bpc_gain": diff("base_domain_bpc", "pretrained_domain_bpc"),
        "general_bpc_increase": diff("pretrained_general_bpc", "base_general_bpc"),
        "task_accuracy_gain": diff("finetuned_task_accuracy", "base_task_accuracy"),
    }
    if vals["base_general_bpc"] is None and vals["pretrained_general_bpc"] is None:
        # no general corpus was evaluated: forgetting cannot be measured, so it is not demanded
        needed = {k: v for k, v in vals.items() if "general" not in k}
    else:
        needed = vals
    return {"metrics": profile.model_metrics(needed), "summary": pd.DataFrame([row])}


# ---------------------------------------------------------------- running and writing


def validate_stage(stage: str, project: Project, params: Params, metrics: dict[str, Any]) -> GateResult:
    """Build the stage's profile tables and validate its suite with Great Expectations (nothing written)."""
    started = time.perf_counter()
    checks = checks_for(stage, params)
    result = GateResult(stage=stage, suite=f"vertical_dag.{stage}")
    if checks:
        from .validate import run_checks

        try:
            tables = stage_tables(stage, project, params, metrics)
        except Exception as exc:  # unreadable outputs fail every check rather than leave an old gate file behind
            log.exception("gate %s: could not build the profile tables", stage)
            result.expectations = [
                ExpectationResult(c.name, c.column, False, f"error: {type(exc).__name__}: {exc}", c.bound, c.description)
                for c in checks
            ]
        else:
            result.expectations = [ExpectationResult(**r) for r in run_checks(result.suite, tables, checks, project.root)]
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def run_gate(ctx: Any, metrics: dict[str, Any], validate: Callable[..., GateResult] | None = None) -> GateResult:
    """Validate the stage's outputs and always write the gate files (an empty passing gate for a stage
    without a suite, since every DVC stage declares data/gates/<stage>.json as an output). validate:
    validate_stage or a stand-in with its signature (gate_process.GateProcess.validate)."""
    result = (validate or validate_stage)(ctx.spec.name, ctx.project, ctx.params, metrics)
    write_gate(result, ctx.project.gates_dir)
    level = logging.INFO if result.success else logging.ERROR
    ctx.log.log(level, "gate %s: %s (%d expectations, %.1f s); report in %s", result.stage,
                "passed" if result.success else "FAILED", len(result.expectations), result.seconds,
                ctx.project.rel(gate_file(ctx.project, result.stage).with_suffix(".md")))
    return result


def skip_gate(ctx: Any, reason: str) -> GateResult:
    """Write a passing, empty gate that says why nothing was checked (gates.enabled false, `--no-gate`), so
    the gate file DVC expects as an output exists and no older result is mistaken for this run's."""
    result = GateResult(stage=ctx.spec.name, suite=f"vertical_dag.{ctx.spec.name}", skipped=reason)
    write_gate(result, ctx.project.gates_dir)
    ctx.log.warning("gate %s skipped: %s", result.stage, reason)
    return result


def check_stage(project: Project, stage: str) -> GateResult:
    """Re-run a stage's gate on its current outputs and metrics file (no stage run), writing the gate files."""
    params = load_params(project.params_file)
    metrics = read_json(project.metrics_file(stage), default={}) or {}
    result = validate_stage(stage, project, params, metrics)
    write_gate(result, project.gates_dir)
    return result


def write_gate(result: GateResult, gates_dir: Path) -> Path:
    path = gates_dir / f"{result.stage}.json"
    write_json(result.to_dict(), path)
    write_text(render_markdown(result), path.with_suffix(".md"))
    return path


def render_markdown(result: GateResult) -> str:
    status = "skipped" if result.skipped else "passed" if result.success else "FAILED"
    lines = [f"# Quality gate `{result.stage}`: {status}", ""]
    if result.skipped:
        lines.append(f"Not validated: {result.skipped}.")
        return "\n".join(lines) + "\n"
    if not result.expectations:
        lines.append("No suite for this stage: nothing to check.")
        return "\n".join(lines) + "\n"
    n_ok = sum(e.success for e in result.expectations)
    lines += [f"{n_ok}/{len(result.expectations)} expectations met (suite `{result.suite}`, {result.seconds} s).", "",
              "| | check | expectation | column | observed | bound |", "|---|---|---|---|---|---|"]
    for e in result.expectations:
        cells = ["ok" if e.success else "**FAIL**", e.name, e.expectation, e.column or "", _short(e.observed, 160), str(e.bound)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def load_gate_result(project: Project | Path | str, stage: str) -> dict[str, Any] | None:
    """The last gate result of a stage as written to data/gates/<stage>.json (None if it never ran)."""
    root = project.root if isinstance(project, Project) else Path(project)
    return read_json(root / "data" / "gates" / f"{stage}.json", default=None)
