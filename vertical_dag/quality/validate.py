"""Run checks through Great Expectations 1.x, in the project's file-backed context (gx/).

Each stage's checks on one table are an ExpectationSuite saved under gx/expectations/, validated by a
ValidationDefinition on a pandas dataframe batch, saved with a Checkpoint whose UpdateDataDocsAction rebuilds
the Data Docs site (gx/uncommitted/data_docs/local_site/index.html); GE keeps each validation result's JSON
under gx/uncommitted/validations/. A GE user finds the suites, checkpoints and results where GE puts them.
A gate runs its checkpoints' validation definitions itself and then builds the Data Docs pages of all of
them at once: running each Checkpoint would rebuild the site (index, templates) once per table.

Great Expectations is imported here, inside the function, so nothing on the CLI start-up path pays for it.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .suites import Check

RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 5}
MAX_EXAMPLES = 5
DATA_SOURCE = "vertical_dag"  # one pandas data source; one dataframe asset per stage table
DATA_DOCS_INDEX = "gx/uncommitted/data_docs/local_site/index.html"


def import_gx() -> None:
    """Import Great Expectations (seconds) with its loggers quiet: what the gate process does first, while
    the stage works (quality/gate_process.py)."""
    _quiet("great_expectations")
    importlib.import_module("great_expectations")


def gx_context(root: Path) -> Any:
    """The project's file-backed GE context (gx/ under the project root, created on first use)."""
    _quiet("great_expectations")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet("great_expectations")  # its INFO lines would drown the stage's log
    context = gx.get_context(mode="file", project_root_dir=str(root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # for this process; not saved
    return context


def run_checks(suite_name: str, tables: dict[str, Any], checks: list[Check], root: Path | None = None) -> list[dict[str, Any]]:
    """Validate every check on its table; one dict per check (in check order) with success/observed/bound.

    root: the project folder whose gx/ context holds the suites (default: the project found from the cwd).
    """
    if not checks:
        return []
    if root is None:
        from ..project import find_project

        root = find_project().root
    context = gx_context(root)
    by_table: dict[tuple[str, str], list[Check]] = defaultdict(list)
    for c in checks:
        by_table[(c.table, repr(sorted((c.rows or {}).items())))].append(c)

    out: dict[str, dict[str, Any]] = {}
    run_id, built = _run_id(), []
    with fingerprints_up_to(FINGERPRINT_BYTES):
        for i, ((table, _), group) in enumerate(by_table.items()):
            again = any(t == table for t, _ in list(by_table)[:i])  # the same table, other rows: its own name
            _validate_table(context, f"{suite_name}.{table}" + (f".{i}" if again else ""), tables[table], group,
                            run_id, built, out)
    # what each checkpoint's UpdateDataDocsAction does, once for the whole gate: the site's index and
    # templates are built once, not once per table
    context.build_data_docs(resource_identifiers=built)
    return [out[c.name] for c in checks]


def _validate_table(context: Any, name: str, table: Any, group: list[Check], run_id: Any, built: list[Any],
                    out: dict[str, dict[str, Any]]) -> None:
    """Validate one table's checks through its checkpoint's validation definition; results into `out`."""
    df = _select(table, group[0].rows)
    checkpoint = _checkpoint(context, name, group)
    for validation in checkpoint.validation_definitions:
        result = validation.run(checkpoint_id=checkpoint.id, batch_parameters={"dataframe": df},
                                result_format=RESULT_FORMAT, run_id=run_id)
        result.meta["checkpoint_id"] = checkpoint.id
        built += _doc_resources(validation.suite.name, run_id, result.batch_id)
        for r in result.results:
            check = next(c for c in group if c.name == r.expectation_config.meta["check"])
            out[check.name] = _summarise(check, r, df)


# GE fingerprints each pandas batch smaller than its HASH_THRESHOLD (1 GB) by hashing every row and index
# value (pandas_execution_engine.get_batch_data_and_markers), for a batch marker in the stored result that
# nothing reads: seconds for millions of documents. No batch definition or option turns it off (GE 1.x), so
# the threshold is lowered while a gate validates: small tables keep their fingerprint, large ones skip it.
FINGERPRINT_BYTES = 16 << 20


@contextmanager
def fingerprints_up_to(limit: int) -> Iterator[None]:
    from great_expectations.execution_engine import pandas_execution_engine as engine

    old = engine.HASH_THRESHOLD  # an AttributeError after a GE upgrade: see test_gx.py
    engine.HASH_THRESHOLD = min(old, limit)
    try:
        yield
    finally:
        engine.HASH_THRESHOLD = old


def _run_id() -> Any:
    import datetime as dt

    from great_expectations.core.run_identifier import RunIdentifier

    return RunIdentifier(run_time=dt.datetime.now(dt.UTC))


def _doc_resources(suite: str, run_id: Any, batch_id: str | None) -> list[Any]:
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    suite_id = ExpectationSuiteIdentifier(name=suite)
    return [ValidationResultIdentifier(expectation_suite_identifier=suite_id, run_id=run_id, batch_identifier=batch_id),
            suite_id]


def _checkpoint(context: Any, name: str, group: list[Check]) -> Any:
    """Suite, validation definition and checkpoint `name`, saved (updated) in the context."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.checkpoint import UpdateDataDocsAction

    try:
        source = context.data_sources.get(DATA_SOURCE)
    except (KeyError, ValueError):
        source = context.data_sources.add_pandas(name=DATA_SOURCE)
    try:
        asset = source.get_asset(name)
    except (LookupError, ValueError):
        asset = source.add_dataframe_asset(name=name)
    try:
        batch = asset.get_batch_definition("all")
    except (KeyError, ValueError):
        batch = asset.add_batch_definition_whole_dataframe("all")
    suite = gx.ExpectationSuite(name=name, meta={"written_by": "vertical_dag; bounds from params.yaml"})
    for c in group:
        suite.add_expectation(getattr(gxe, c.expectation)(**c.kwargs, meta={"check": c.name}))
    suite = context.suites.add_or_update(suite)
    validation = context.validation_definitions.add_or_update(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    checkpoint = gx.Checkpoint(name=name, validation_definitions=[validation], result_format=RESULT_FORMAT,
                               actions=[UpdateDataDocsAction(name="update_data_docs")])
    return context.checkpoints.add_or_update(checkpoint)


def _quiet(prefix: str) -> None:
    for name in [prefix, *(n for n in logging.root.manager.loggerDict if n.startswith(prefix + "."))]:
        logging.getLogger(name).setLevel(logging.WARNING)


def _select(df: Any, rows: dict[str, Any] | None) -> Any:
    if not rows:
        return df
    mask = None
    for col, want in rows.items():
        values = want if isinstance(want, list | tuple | set) else [want]
        m = df[col].isin(values) if col in df else df.index.isin([])
        mask = m if mask is None else mask & m
    return df[mask].reset_index(drop=True)


def _summarise(check: Check, r: Any, df: Any) -> dict[str, Any]:
    res = dict(r.result or {})
    exc = r.exception_info or {}
    if exc.get("raised_exception"):
        observed: Any = f"error: {exc.get('exception_message')}"
    elif check.observed_columns:
        cols = [c for c in check.observed_columns if c in df]
        rows = [{c: _plain(row[c]) for c in cols} for row in df.to_dict("records")]
        observed = rows[0] if len(rows) == 1 else rows
    elif "observed_value" in res:
        observed = _plain(res["observed_value"])
    else:
        observed = {"unexpected": _plain(res.get("unexpected_count", 0)), "of": _plain(res.get("element_count", len(df)))}
        if res.get("unexpected_count"):
            observed["examples"] = _examples(check, res, df)
    return {
        "name": check.name,
        "column": check.column,
        "success": bool(r.success),
        "observed": observed,
        "bound": check.bound,
        "description": check.description,
        "expectation": r.expectation_config.type,
    }


def _examples(check: Check, res: dict[str, Any], df: Any) -> list[Any]:
    """Name offending rows by their id column (doc_id, cluster_id ...) and the offending value."""
    idx = res.get("partial_unexpected_index_list") or []
    values = res.get("partial_unexpected_list") or []
    col = check.column
    examples = []
    for i, pos in enumerate(idx[:MAX_EXAMPLES]):
        try:
            row = df.loc[pos]
        except KeyError:
            continue
        ident = _plain(row[check.id_column]) if check.id_column and check.id_column in df else pos
        value = _plain(row[col]) if col and col in df else (values[i] if i < len(values) else None)
        examples.append({check.id_column or "row": ident, col or "value": value})
    if not examples:
        examples = [_plain(v) for v in values[:MAX_EXAMPLES]]
    return examples


def _plain(v: Any) -> Any:
    """JSON-friendly scalar: numpy numbers to Python, NaN to None."""
    if hasattr(v, "item") and not isinstance(v, list | dict | str):
        try:
            v = v.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, float):
        return round(v, 6)
    return v
