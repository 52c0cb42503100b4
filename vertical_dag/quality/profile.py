"""Profile tables: what the suites validate. One row per document of a stage's output, plus small summaries.

Text never reaches Great Expectations: a document becomes its id, length, language, hashes, split and
flags (e.g. which PII kinds are still in it). Cross-table facts (conservation, clusters across splits,
split fractions, model metrics) become one small table each, so every check is a plain GE expectation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..records import list_parts, read_json, read_many
from ..text.hash_spill import distinct
from . import part_profile
from .file_memo import cached

SPLIT_NAMES = ("train", "validation", "test")
# Ledger actions that remove a document from a stage's output (the rest annotate kept documents).
REMOVING_ACTIONS = ("dropped", "quarantined")

def pii_settings(pii_params: Any = None) -> dict[str, Any]:
    """What the gate's PII detector looks for: normalize.pii's types and extra patterns (every built-in type
    when redaction is switched off: the gate still looks), and a hash of the detector's code."""
    from ..text import pii

    code = hashlib.blake2b(Path(pii.__file__).read_bytes(), digest_size=8).hexdigest()
    if pii_params is not None and pii_params.enabled:
        return {"types": list(pii_params.types), "extra_patterns": dict(pii_params.extra_patterns), "code": code}
    return {"types": list(pii.PII_TYPES), "extra_patterns": {}, "code": code}


def pii_detector(settings: dict[str, Any]) -> Callable[..., dict[int, list[str]]]:
    """A function (texts, the same texts as an Arrow array or None) -> the PII kinds found, by index of the
    texts that hold any: the project's redactor with pii_settings' types and extra patterns, over a batch."""
    from ..text.pii import Redactor

    return Redactor(settings["extra_patterns"], tuple(settings["types"])).found


# ---------------------------------------------------------------- reading a stage's documents


def doc_files(out: Path) -> list[Path]:
    """The document files of a stage: <out>/parts/*.parquet, else the Parquet files directly in <out> (splits)."""
    parts = list_parts(out / "parts")
    if parts:
        return parts
    return sorted(p for p in out.glob("*.parquet") if not p.name.startswith("."))


def count_docs(out: Path) -> int:
    return sum(read_many(lambda p: cached("rows", lambda: pq.ParquetFile(p).metadata.num_rows, p), doc_files(out)))


def _hash_text(texts: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pa.array([hashlib.blake2b(t.encode("utf-8"), digest_size=8).hexdigest() if t is not None else None
                     for t in texts.to_pylist()], pa.string())


PROFILE_FIELDS = ["doc_id", "part", "n_chars", "source", "batch", "lang", "split", "text_hash", "canonical_hash", "cluster_id",
                  "family_id"]
_FILE_FIELDS = ("doc_id", "source", "batch", "lang", "split", "canonical_hash", "cluster_id", "family_id")


def _wanted(columns: set[str] | None) -> set[str]:
    """The profile fields to build: what is asked for (all without `columns`), and what fills it."""
    wanted = set(PROFILE_FIELDS) if columns is None else {"doc_id", *columns}
    if "family_id" in wanted:  # coalesced from the cluster
        wanted.add("cluster_id")
    if "canonical_hash" in wanted:  # the exact text's hash where a file has none
        wanted.add("text_hash")
    return wanted


def _profile_part(path: Path, detect: Callable[[], Any] | None, text_hash: bool, sidecar: pa.Table | None = None,
                  columns: set[str] | None = None) -> pa.Table:
    """The profile rows of one Parquet file (no `part` column: documents() adds it); its text is dropped as
    soon as it is measured. With the stage's sidecar (n_chars, further measures and copies of small columns,
    row by row with the file) the text is not read, nor any column the sidecar holds, unless a measure the
    gate needs is not in it. detect: makes the PII detector (pii_found), None for no PII column. text_hash:
    hash the text (a Python loop) where the file has no canonical_hash. Only the fields `columns` needs are
    built: a gate over hundreds of parts pays for every column it makes per file."""
    f = pq.ParquetFile(path)
    names = f.schema_arrow.names
    wanted = _wanted(columns)
    if sidecar is not None and detect is not None and "pii_found" not in sidecar.column_names:
        sidecar = None
    read_text = "text" in names and (sidecar is None or (text_hash and "canonical_hash" not in names
                                                         and "text_hash" in wanted))
    held = set(sidecar.column_names) if sidecar is not None else set()
    read = [c for c in _FILE_FIELDS if c in names and c in wanted and c not in held] + (["text"] if read_text else [])
    t = f.read(columns=read) if read else pa.table({})
    n = t.num_rows if read else f.metadata.num_rows
    if sidecar is not None and sidecar.num_rows != n:
        raise ValueError(f"profile of {path.name} does not match its rows")
    source = {**{c: t.column(c) for c in t.column_names}, **{c: sidecar.column(c) for c in held & set(names)}}
    text = source["text"] if read_text else pa.nulls(n, pa.string())
    cols: dict[str, Any] = {c: (pc.cast(source[c], pa.string()) if c in source else pa.nulls(n, pa.string()))
                            for c in _FILE_FIELDS if c in wanted}
    if sidecar is not None:  # it matched its file (part_profile: footer hash; split_profile: size, mtime, rows)
        measured = sidecar
    else:
        measured = part_profile.measure(cols["doc_id"], text, detect() if detect is not None else None)
    cols["n_chars"] = measured.column("n_chars")
    if "text_hash" in wanted:
        cols["text_hash"] = _hash_text(text) if read_text and text_hash else pa.nulls(n, pa.string())
        if "canonical_hash" not in names:  # without the dedup stage's hash, the exact text's
            cols["canonical_hash"] = cols["text_hash"]
    if "cluster_id" in wanted and "cluster_id" not in names:  # no near-duplicate clusters: each its own
        cols["cluster_id"] = cols["doc_id"]
    extra = [c for c in measured.column_names if c not in ("n_chars", *_FILE_FIELDS)]
    for c in extra:
        cols[c] = measured.column(c)
    return pa.table({c: cols[c] for c in PROFILE_FIELDS + extra if c in cols})


def part_profiles(out: Path, files: list[Path], *, pii: Any = False, text_hash: bool = True,
                  sidecars: dict[Path, pa.Table] | None = None, columns: set[str] | None = None) -> list[pa.Table]:
    """_profile_part of every file, as `documents` takes them (see there), each reused while its file and
    sidecar are unchanged (file_memo.py: the gate process reads them while the stage works)."""
    detector: list[Any] = []  # built once, and only if some file has to be scanned

    def detect() -> Any:
        if not detector:
            detector.append(pii_detector(pii_settings(pii)))
        return detector[0]

    sidecars = sidecars or {}
    kind = ("profile-part", repr(pii), text_hash, tuple(sorted(columns)) if columns is not None else None)

    def one(path: Path) -> pa.Table:
        sidecar = sidecars.get(path)

        def read() -> pa.Table:
            return _profile_part(path, detect if pii is not False else None, text_hash, sidecar, columns)

        if sidecar is None:  # measured from the file alone
            return cached(kind, read, path)
        if path.is_relative_to(out / "parts"):  # a part stage's sidecar, one file per part
            return cached(kind + ("sidecar",), read, path, part_profile.sidecar_path(out, path))
        return read()

    return [one(p) for p in files]


def documents(out: Path, *, pii: Any = False, text_hash: bool = True, sidecars: dict[Path, pa.Table] | None = None,
              columns: set[str] | None = None) -> Any:
    """One row per document of a stage's output, as a pandas DataFrame (no text).

    pii: False for no PII column; else normalize.pii params (None: the built-in types) for `pii_found`,
    the comma-joined PII kinds still in a document (null when none). text_hash: hash texts where there is
    no canonical_hash. sidecars: per file the stage's profile rows (split_profile.py, part_profile.py);
    files without one are measured from their texts. columns: only these (and the columns they are filled
    from), so millions of rows stay small in pandas."""
    files = doc_files(out)
    tables = part_profiles(out, files, pii=pii, text_hash=text_hash, sidecars=sidecars, columns=columns)
    if not tables:
        schema = pa.schema([(c, pa.int64() if c == "n_chars" else pa.string()) for c in PROFILE_FIELDS if c != "part"])
        if pii is not False:
            schema = schema.append(pa.field("pii_found", pa.string()))
        table = schema.empty_table().select([c for c in schema.names if c in _wanted(columns) or c == "pii_found"])
    else:
        table = pa.concat_tables(tables, promote_options="default")
    # the file each row came from, as one dictionary array (a string per row and file cost 0.4 s at 100x)
    rows = np.array([t.num_rows for t in tables], np.int64)
    part = pa.DictionaryArray.from_arrays(pa.array(np.repeat(np.arange(len(files), dtype=np.int32), rows)),
                                          pa.array([p.stem for p in files], pa.string()))
    table = table.add_column(1, "part", part.cast(pa.string()))
    # parts written before clustering stand alone; without template families: the cluster
    if "cluster_id" in table.column_names:
        table = table.set_column(table.schema.get_field_index("cluster_id"), "cluster_id",
                                 pc.coalesce(table.column("cluster_id"), table.column("doc_id")))
    if "family_id" in table.column_names:
        table = table.set_column(table.schema.get_field_index("family_id"), "family_id",
                                 pc.coalesce(table.column("family_id"), table.column("cluster_id")))
    if columns is not None:
        table = table.select([c for c in table.column_names if c in columns])
    # one chunk per column, not one per file: pandas' duplicated() on an Arrow-backed string column of 700
    # chunks took 1.2 s for 2.6 M doc_ids, 0.5 s on one chunk
    return table.combine_chunks().to_pandas()


def texts(out: Path, batch_size: int = 8192) -> Iterator[tuple[np.ndarray, list[str | None]]]:
    """(row indices, texts) of a stage's output by batch, in the row order of `documents`."""
    offset = 0
    for path in doc_files(out):
        f = pq.ParquetFile(path)
        if "text" not in f.schema_arrow.names:
            n = f.metadata.num_rows
            yield np.arange(offset, offset + n), [None] * n
            offset += n
            continue
        for batch in f.iter_batches(batch_size=batch_size, columns=["text"]):
            yield np.arange(offset, offset + batch.num_rows), batch.column(0).to_pylist()
            offset += batch.num_rows


# ---------------------------------------------------------------- summaries


def ledger_counts(out: Path) -> dict[str, int]:
    counts = {a: 0 for a in REMOVING_ACTIONS}

    def actions(path: Path) -> list[dict[str, Any]]:  # the action column only: details can be long
        return pc.value_counts(pq.ParquetFile(path).read(columns=["action"]).column("action")).to_pylist()

    for rows in read_many(lambda p: cached("ledger-actions", lambda: actions(p), p), list_parts(out / "ledger")):
        for row in rows:
            if row["values"] in counts:
                counts[row["values"]] += int(row["counts"])
    return counts


def conservation(rows_in: int, out: Path, metrics: dict[str, Any], rows_out: int | None = None) -> Any:
    """One row: documents in, out, removed in the ledger, and the difference (0 when conserved)."""
    import pandas as pd

    counts = ledger_counts(out)
    rows_out = count_docs(out) if rows_out is None else rows_out
    row = {
        "documents_in": rows_in,
        "documents_out": rows_out,
        "ledger_dropped": counts["dropped"],
        "ledger_quarantined": counts["quarantined"],
        "metrics_documents_out": metrics.get("documents_out"),
    }
    row["difference"] = rows_in - rows_out - counts["dropped"] - counts["quarantined"]
    row["quarantine_rate"] = counts["quarantined"] / rows_in if rows_in else 0.0
    row["drop_rate"] = counts["dropped"] / rows_in if rows_in else 0.0
    return pd.DataFrame([row])


class SplitPairs(NamedTuple):
    """The distinct (group, split) pairs of a split's documents, as positions in `groups` and `splits`."""

    groups: pa.Array  # distinct group values, in order of first appearance
    group_of: np.ndarray  # per pair: its group's position
    split_of: np.ndarray  # per pair: its split's position
    splits: pa.Array  # distinct split names
    documents: np.ndarray  # documents per split


def split_pairs(docs: Any, key: str) -> SplitPairs:
    """The pairs from dictionary codes and one sort of int64s: pandas' groupby(key).nunique() sorted 2.6 M
    string keys, half of the split gate's 8 s at 100x. Documents without a group or a split are in no pair
    (as nunique leaves them out)."""
    if docs.empty:
        none = np.zeros(0, np.int64)
        return SplitPairs(pa.array([], pa.string()), none, none, pa.array([], pa.string()), none)
    groups, splits = pc.dictionary_encode(pa.array(docs[key])), pc.dictionary_encode(pa.array(docs["split"]))
    g = pc.fill_null(groups.indices, -1).to_numpy().astype(np.int64)
    s = pc.fill_null(splits.indices, -1).to_numpy().astype(np.int64)
    n_splits = max(1, len(splits.dictionary))
    ok = (g >= 0) & (s >= 0)
    pairs = distinct(g[ok] * n_splits + s[ok])
    return SplitPairs(groups.dictionary, pairs // n_splits, pairs % n_splits, splits.dictionary,
                      np.bincount(s[s >= 0], minlength=len(splits.dictionary)))


def splits_per_group(p: SplitPairs, name: str) -> Any:
    """One row per group (near-duplicate cluster, template family): how many splits its documents landed in."""
    import pandas as pd

    return pd.DataFrame({name: pd.Series(p.groups.to_pandas(), dtype=str),
                         "n_splits": np.bincount(p.group_of, minlength=len(p.groups))})


def split_fractions(families: SplitPairs, n_docs: int, expected: dict[str, float], tolerance: float,
                    sigmas: float) -> Any:
    """One row per split of `n_docs` documents: observed vs expected fraction, the allowed deviation, and how
    many template families it holds of how many there are (each goes to one split whole, so a corpus of few
    families, or of one family much larger than the others, cannot match small fractions: the row says why).

    The allowance is the tolerance or `sigmas` binomial standard errors over the number of template
    families (what is actually assigned), whichever is larger, so a tiny corpus is not failed for sampling noise.
    """
    import pandas as pd

    n_families = len(families.groups)
    position = {name: i for i, name in enumerate(families.splits.to_pylist())}
    rows = []
    for name, want in expected.items():
        k = position.get(name, -1)
        got = float(families.documents[k]) / n_docs if k >= 0 and n_docs else 0.0
        noise = sigmas * math.sqrt(want * (1 - want) / max(1, n_families))
        rows.append({"split": name, "fraction": round(got, 6), "expected": want, "deviation": round(abs(got - want), 6),
                     "allowed": round(max(tolerance, noise), 6),
                     "families": int((families.split_of == k).sum()) if k >= 0 else 0, "of_families": n_families})
    df = pd.DataFrame(rows)
    df["excess"] = df["deviation"] - df["allowed"] if not df.empty else []
    return df


def model_metrics(metrics: dict[str, Any]) -> Any:
    """Long table (metric, value) of the model numbers a gate needs; a missing number is a null value."""
    import pandas as pd

    return pd.DataFrame([{"metric": k, "value": _num(v)} for k, v in metrics.items()])


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def read_metrics(path: Path) -> dict[str, Any]:
    return read_json(path, default={}) or {}
