"""The suites: which expectations each stage's outputs must meet, with bounds from params.gates.

A check names a profile table (see profile.py), a built-in Great Expectations expectation (by class name,
so this module imports no GE) and its arguments. Check names per stage are fixed and never depend on
params or data, so Dagster can declare one asset check per name before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..params import Params

SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class Check:
    name: str
    table: str  # profile table it validates
    expectation: str  # class name in great_expectations.expectations
    kwargs: dict[str, Any]
    bound: Any  # the bound in words, for the report and the failure message
    description: str
    id_column: str | None = None  # names offending rows of a per-row table
    observed_columns: tuple[str, ...] = ()  # report these columns of a summary table as the observed value
    rows: dict[str, Any] | None = field(default=None)  # filter a table before validating: {column: value | [values]}

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column") or self.kwargs.get("column_A")


def _between(lo: float | None = None, hi: float | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = dict(extra)
    if lo is not None:
        out["min_value"] = lo
    if hi is not None:
        out["max_value"] = hi
    return out


# ---------------------------------------------------------------- per-document checks shared by data stages


def _document_checks(p: Params) -> list[Check]:
    g = p.gates
    return [
        Check("documents_present", "documents", "ExpectTableRowCountToBeBetween", _between(g.min_documents),
              f">= {g.min_documents} documents", "the stage kept at least gates.min_documents documents"),
        Check("doc_ids_not_null", "documents", "ExpectColumnValuesToNotBeNull", {"column": "doc_id"},
              "no null doc_id", "every document has an id", id_column="part"),
        Check("doc_ids_unique", "documents", "ExpectColumnValuesToBeUnique", {"column": "doc_id"},
              "each doc_id once", "no two documents share an id", id_column="doc_id"),
        Check("text_not_empty", "documents", "ExpectColumnValuesToBeBetween", _between(1, column="n_chars"),
              "n_chars >= 1", "no document has empty text", id_column="doc_id"),
    ]


def _conservation(stage: str) -> Check:
    return Check(
        "conservation", "conservation", "ExpectColumnValuesToBeBetween", _between(0, 0, column="difference"),
        "documents_in - documents_out - ledger_dropped - ledger_quarantined == 0",
        f"every document {stage} received is in its output or in its ledger as dropped/quarantined",
        observed_columns=("documents_in", "documents_out", "ledger_dropped", "ledger_quarantined", "difference"),
    )


# ---------------------------------------------------------------- stage suites


def ingest_checks(p: Params) -> list[Check]:
    g = p.gates
    return [
        *_document_checks(p),
        Check("quarantine_rate", "summary", "ExpectColumnValuesToBeBetween",
              _between(0, g.max_quarantine_rate, column="quarantine_rate"), f"<= {g.max_quarantine_rate}",
              "share of read records quarantined (unreadable, malformed)",
              observed_columns=("quarantine_rate", "ledger_quarantined", "documents_in")),
        _conservation("ingest"),
    ]


def dedup_checks(p: Params) -> list[Check]:
    g = p.gates
    return [
        *_document_checks(p),
        Check("exact_hashes_unique", "documents", "ExpectColumnValuesToBeUnique", {"column": "canonical_hash"},
              "each canonical_hash once", "no two kept documents share an exact-duplicate hash", id_column="doc_id"),
        Check("duplicate_rate", "summary", "ExpectColumnValuesToBeBetween",
              _between(g.min_duplicate_rate, g.max_duplicate_rate, column="drop_rate"),
              f"between {g.min_duplicate_rate} and {g.max_duplicate_rate}", "share of documents removed as duplicates",
              observed_columns=("drop_rate", "ledger_dropped", "documents_in")),
        _conservation("dedup"),
    ]


def normalize_checks(p: Params) -> list[Check]:
    g = p.gates
    max_chars = p.ingest.max_doc_chars  # what ingest let through; normalize must not produce longer
    allowed = allowed_langs(p)
    if allowed:
        lang = Check("lang_allowed", "documents", "ExpectColumnValuesToBeInSet",
                     {"column": "lang", "value_set": allowed}, f"in {allowed}",
                     "every document's language is an allowed one", id_column="doc_id")
    else:  # no allowed set configured: the language must at least have been detected
        lang = Check("lang_allowed", "documents", "ExpectColumnValuesToNotBeNull", {"column": "lang"},
                     "lang detected (no allowed languages set)", "every document has a detected language",
                     id_column="doc_id")
    return [
        *_document_checks(p),
        Check("no_pii_left", "documents", "ExpectColumnValuesToBeNull", {"column": "pii_found"},
              "no PII pattern in text", "no email, phone, ID card, bank card or IP address survives normalisation",
              id_column="doc_id"),
        lang,
        Check("length_within_bounds", "documents", "ExpectColumnValuesToBeBetween",
              _between(g.min_doc_chars, max_chars, column="n_chars"), f"{g.min_doc_chars} <= n_chars <= {max_chars}",
              "document lengths within gates.min_doc_chars / ingest.max_doc_chars", id_column="doc_id"),
        _conservation("normalize"),
    ]


def split_checks(p: Params) -> list[Check]:
    g = p.gates
    threshold = g.max_contamination
    return [
        *_document_checks(p),
        Check("split_names_valid", "documents", "ExpectColumnValuesToBeInSet",
              {"column": "split", "value_set": list(SPLIT_NAMES)}, f"in {list(SPLIT_NAMES)}",
              "every document is in a known split", id_column="doc_id"),
        Check("clusters_in_one_split", "clusters", "ExpectColumnValuesToBeBetween", _between(None, 1, column="n_splits"),
              "n_splits <= 1", "no near-duplicate cluster has documents in two splits", id_column="cluster_id"),
        Check("families_in_one_split", "families", "ExpectColumnValuesToBeBetween", _between(None, 1, column="n_splits"),
              "n_splits <= 1", "no template family has documents in two splits", id_column="family_id"),
        Check("split_fractions", "fractions", "ExpectColumnValuesToBeBetween", _between(None, 0, column="excess"),
              f"|fraction - expected| <= max(gates.split_fraction_tolerance={g.split_fraction_tolerance}, "
              f"{g.split_fraction_sigmas} binomial std errors)",
              "split sizes match the split params (each template family goes to one split whole: with few "
              "families, or one much larger than the rest, add documents or change split.fractions)",
              id_column="split", observed_columns=("split", "fraction", "expected", "allowed", "families", "of_families")),
        Check("no_contamination", "documents", "ExpectColumnValuesToBeBetween",
              _between(None, threshold, column="contamination"), f"contamination <= {threshold}",
              "no validation/test document overlaps train above the contamination threshold", id_column="doc_id",
              rows={"split": ["validation", "test"]}),
        _conservation("split"),
    ]


# Model checks compare one row of numbers; they use ExpectColumnMinToBeBetween because, unlike the per-value
# expectations, it fails on a missing number instead of skipping it.
def pretrain_checks(p: Params) -> list[Check]:
    return [
        Check("metrics_present", "metrics", "ExpectColumnValuesToNotBeNull", {"column": "value"},
              "val_perplexity_base and val_perplexity_final reported", "the stage reported the numbers the gate needs",
              id_column="metric"),
        Check("perplexity_improved", "summary", "ExpectColumnMinToBeBetween",
              _between(p.gates.min_perplexity_gain, None, column="perplexity_gain", strict_min=True),
              f"val_perplexity_base - val_perplexity_final > {p.gates.min_perplexity_gain}",
              "continued pretraining lowered domain validation perplexity",
              observed_columns=("val_perplexity_base", "val_perplexity_final", "perplexity_gain")),
        _conservation("pretrain"),
    ]


def finetune_checks(p: Params) -> list[Check]:
    return [_conservation("finetune")]


def evaluate_checks(p: Params) -> list[Check]:
    g = p.gates
    return [
        Check("metrics_present", "metrics", "ExpectColumnValuesToNotBeNull", {"column": "value"},
              "domain_bpc, general_bpc, task_accuracy reported for base, pretrained, finetuned",
              "the evaluation reported the numbers the gate needs", id_column="metric"),
        Check("domain_bpc_improved", "summary", "ExpectColumnMinToBeBetween",
              _between(g.min_domain_bpc_gain, None, column="domain_bpc_gain", strict_min=True),
              f"base.domain_bpc - pretrained.domain_bpc > {g.min_domain_bpc_gain}",
              "the pretrained checkpoint models domain text better than the base model",
              observed_columns=("base_domain_bpc", "pretrained_domain_bpc", "domain_bpc_gain")),
        Check("general_bpc_not_worse", "summary", "ExpectColumnValuesToBeBetween",
              _between(None, g.max_general_bpc_increase, column="general_bpc_increase"),
              f"pretrained.general_bpc - base.general_bpc <= {g.max_general_bpc_increase}",
              "continued pretraining did not forget general text beyond the bound (no general corpus: nothing to check)",
              observed_columns=("base_general_bpc", "pretrained_general_bpc", "general_bpc_increase")),
        Check("task_accuracy_improved", "summary", "ExpectColumnMinToBeBetween",
              _between(g.min_task_accuracy_gain, None, column="task_accuracy_gain", strict_min=True),
              f"finetuned.task_accuracy - base.task_accuracy > {g.min_task_accuracy_gain}",
              "fine-tuning raised task accuracy above the base model",
              observed_columns=("base_task_accuracy", "finetuned_task_accuracy", "task_accuracy_gain")),
    ]


SUITES = {
    "ingest": ingest_checks,
    "dedup": dedup_checks,
    "normalize": normalize_checks,
    "split": split_checks,
    "pretrain": pretrain_checks,
    "finetune": finetune_checks,
    "evaluate": evaluate_checks,
}


def checks_for(stage: str, params: Params) -> list[Check]:
    """The stage's checks (empty for a stage without a suite)."""
    fn = SUITES.get(stage)
    return fn(params) if fn else []


def gate_check_names(stage: str) -> list[str]:
    """Stable names of a stage's checks, independent of params and data (Dagster declares them up front)."""
    return [c.name for c in checks_for(stage, Params())]


def allowed_langs(p: Params) -> list[str]:
    """normalize.allowed_languages (plus "und" when normalize keeps undetermined documents); empty: any."""
    n = p.normalize
    langs = list(n.allowed_languages)
    if langs and not n.drop_undetermined_language:
        langs.append("und")
    return langs


def expected_fractions(p: Params) -> dict[str, float]:
    """What the split section asks for."""
    return p.split.fractions.model_dump()
