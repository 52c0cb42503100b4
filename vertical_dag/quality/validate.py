"""Run checks through Great Expectations 1.x: an ephemeral context, a pandas data source, one batch per
profile table, and the stage's expectations on that table as an ExpectationSuite.

Great Expectations is imported here, inside the function, so nothing on the CLI start-up path pays for it.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Any

from .suites import Check

RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 5}
MAX_EXAMPLES = 5


def run_checks(suite_name: str, tables: dict[str, Any], checks: list[Check]) -> list[dict[str, Any]]:
    """Validate every check on its table; one dict per check (in check order) with success/observed/bound."""
    if not checks:
        return []
    _quiet("great_expectations")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet("great_expectations")  # its INFO lines would drown the stage's log

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(name=suite_name)

    by_table: dict[tuple[str, str], list[Check]] = defaultdict(list)
    for c in checks:
        by_table[(c.table, repr(sorted((c.rows or {}).items())))].append(c)

    out: dict[str, dict[str, Any]] = {}
    for i, ((table, _), group) in enumerate(by_table.items()):
        df = _select(tables[table], group[0].rows)
        asset = source.add_dataframe_asset(name=f"{table}_{i}")
        batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df})
        suite = gx.ExpectationSuite(name=f"{suite_name}.{table}")
        for c in group:
            suite.add_expectation(getattr(gxe, c.expectation)(**c.kwargs, meta={"check": c.name}))
        result = batch.validate(suite, result_format=RESULT_FORMAT)
        for r in result.results:
            name = r.expectation_config.meta["check"]
            check = next(c for c in group if c.name == name)
            out[name] = _summarise(check, r, df)
    return [out[c.name] for c in checks]


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
