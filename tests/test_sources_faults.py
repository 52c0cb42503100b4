"""Hostile inputs at the reader level: one bad record never takes a file (or the batch) down, the SQLite
reader is read-only on its own, symlinks out of the project follow a stated policy, bad encodings in params
exit 2 naming the key, and messages name the file, the line and what is wrong."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest

from vertical_dag.params import IngestParams, ParamsError, load_params
from vertical_dag.records import read_ledger
from vertical_dag.sources import FileRejected, ReadOptions
from vertical_dag.stages.ingest import ingest_file, scan_raw

from .conftest import run_cli
from .test_sources_pdf import records

LOG = logging.getLogger("test")


def ingest_one(project: Path, rel: str, params: IngestParams | None = None) -> tuple[list[dict], list[dict]]:
    """ingest_file on data/raw/<rel> of `project`: (documents, ledger rows)."""
    import pyarrow.parquet as pq

    part, ledger = project / "out" / "part.parquet", project / "out" / "ledger" / "part.parquet"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.unlink(missing_ok=True)
    ingest_file(project / "data/raw" / rel, rel, rel.split("/")[0], params or IngestParams(), part, ledger, LOG)
    docs = pq.read_table(part).to_pylist()
    rows = read_ledger(ledger.parent).to_pylist() if ledger.exists() else []
    return docs, rows


def test_lone_surrogate_in_jsonl_quarantines_that_record_only(tmp_path: Path):
    raw = tmp_path / "data/raw/src"
    raw.mkdir(parents=True)
    (raw / "a.jsonl").write_text('{"id": 1, "text": "before"}\n{"id": 2, "text": "bad \\ud800 escape"}\n'
                                 '{"id": 3, "text": "after", "note": "x\\udfffy"}\n{"id": 4, "text": "last"}\n')
    docs, ledger = ingest_one(tmp_path, "src/a.jsonl")
    assert [d["uri"] for d in docs] == ["src/a.jsonl:1", "src/a.jsonl:4"]
    assert [(r["reason"], r["detail"].split(": ")[0]) for r in ledger] == [("invalid_unicode", "src/a.jsonl:2"),
                                                                       ("invalid_unicode", "src/a.jsonl:3")]
    assert "'text'" in ledger[0]["detail"] and "'note'" in ledger[1]["detail"]


def test_lone_surrogate_in_a_json_array_quarantines_that_item_only(tmp_path: Path):
    path = tmp_path / "a.json"
    path.write_text('[{"id": 1, "text": "ok"}, {"id": 2, "text": "\\udc00"}, {"id": 3, "text": "ok too"}]')
    good, bad = records(path)
    assert [r.key for r in good] == ["1", "3"] and [(b.location, b.reason) for b in bad] == [("row 2", "invalid_unicode")]


def test_csv_broken_quote_resynchronises_at_the_next_line(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_text('id,text\n1,first\n2,second\n3,"broken quote\n4,"fourth row"\n5,fifth\n')
    good, bad = records(path)
    assert [(r.key, r.text) for r in good] == [("1", "first"), ("2", "second"), ("4", "fourth row"), ("5", "fifth")]
    assert [(b.location, b.reason) for b in bad] == [("row 3", "bad_row")]
    assert bad[0].detail.startswith("line 4:")
    unclosed = tmp_path / "u.csv"
    unclosed.write_text('id,text\n1,"never closed\n2,kept\n3,kept too\n')
    good, bad = records(unclosed)
    assert [r.key for r in good] == ["2", "3"] and [(b.location, b.reason) for b in bad] == [("row 1", "bad_row")]


def test_sqlite_bad_utf8_cell_quarantines_that_row_only(tmp_path: Path):
    db = tmp_path / "d.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE docs (id INTEGER, text TEXT)")
    con.executemany("INSERT INTO docs VALUES (?, ?)", [(i, f"row {i}") for i in range(1, 22) if i not in (11, 15)])
    con.execute("INSERT INTO docs VALUES (11, CAST(x'41ff41' AS TEXT))")  # invalid in UTF-8 and every encoding
    con.execute("INSERT INTO docs VALUES (15, CAST(? AS TEXT))", ("民法典第十五条".encode("gb18030"),))
    con.commit()
    con.close()
    good, bad = records(db, ReadOptions(query="SELECT * FROM docs ORDER BY id"))
    assert len(good) == 20 and [(b.location, b.reason) for b in bad] == [("row 11", "encoding_error")]
    assert "column 'text'" in bad[0].detail and "not valid UTF-8" in bad[0].detail
    row15 = next(r for r in good if r.key == "15")
    assert row15.text == "民法典第十五条" and row15.meta["encoding"] == "gb18030"


@pytest.mark.parametrize("query", [
    "VACUUM INTO '{out}'",
    "ATTACH DATABASE '{out}' AS other",
    "WITH x AS (SELECT 1) INSERT INTO docs VALUES (9, 'x')",
    "PRAGMA query_only = OFF",
])
def test_sqlite_reader_refuses_writes_on_its_own(tmp_path: Path, query: str):
    db = tmp_path / "d.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE docs (id INTEGER, text TEXT)")
    con.execute("INSERT INTO docs VALUES (1, 'one')")
    con.commit()
    con.close()
    before = db.read_bytes()
    out = tmp_path / "copy.db"
    with pytest.raises(FileRejected) as err:
        records(db, ReadOptions(query=query.format(out=out)))
    assert err.value.reason == "query_failed" and "this reader only reads" in err.value.detail
    assert not out.exists() and db.read_bytes() == before


def _symlinks(tmp_path: Path) -> Path:
    project = tmp_path / "proj"
    raw = project / "data/raw/src"
    raw.mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text("text from outside the project")
    (project / "notes.txt").write_text("text inside the project")
    os.symlink(outside / "secret.txt", raw / "outside.txt")
    os.symlink(project / "notes.txt", raw / "inside.txt")
    os.symlink(outside, raw / "linked_folder")
    return project


def test_symlink_out_of_the_project_is_refused_unless_allowed(tmp_path: Path):
    project = _symlinks(tmp_path)
    assert sorted(scan_raw(project / "data/raw")) == ["src/inside.txt", "src/linked_folder", "src/outside.txt"]
    docs, ledger = ingest_one(project, "src/outside.txt")
    assert not docs and [r["reason"] for r in ledger] == ["external_symlink"]
    assert str((tmp_path / "elsewhere/secret.txt").resolve()) in ledger[0]["detail"]
    assert "ingest.follow_external_symlinks" in ledger[0]["detail"]
    docs, ledger = ingest_one(project, "src/outside.txt", IngestParams(follow_external_symlinks=True))
    assert [d["text"] for d in docs] == ["text from outside the project"] and not ledger
    assert str((tmp_path / "elsewhere/secret.txt").resolve()) in docs[0]["meta"]
    docs, ledger = ingest_one(project, "src/inside.txt")
    assert [d["text"] for d in docs] == ["text inside the project"] and not ledger
    docs, ledger = ingest_one(project, "src/linked_folder")
    assert not docs and [r["reason"] for r in ledger] == ["symlinked_folder"]


def test_unknown_encoding_in_params_names_the_key(tmp_path: Path, project: Path):
    with pytest.raises(ValueError, match="klingon"):
        IngestParams(encodings=["utf-8", "klingon"])
    with pytest.raises(ValueError, match="not a text encoding"):
        IngestParams(encodings=["rot13"])
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("encodings: [", "encodings: [klingon, "))
    with pytest.raises(ParamsError, match=r"ingest\.encodings.*klingon"):
        load_params(params)
    (project / "data/raw/src").mkdir(parents=True)
    (project / "data/raw/src/a.txt").write_text("a document")
    proc = run_cli("run", "ingest", cwd=project, check=False)
    assert proc.returncode == 2 and "ingest.encodings" in proc.stderr and "klingon" in proc.stderr
    assert not (project / "data/ingested/parts").exists() or not any((project / "data/ingested/parts").iterdir())


def test_messages_name_file_line_and_the_problem(tmp_path: Path):
    raw = tmp_path / "data/raw/src"
    raw.mkdir(parents=True)
    (raw / "m.jsonl").write_text('{"id": 1, "text": "fine"}\n{"id": 2, "text": "raw\ttab"}\n{"id": 3, "text": null}\n'
                                 '{"id": 4, "body": "x"}\n')
    _, ledger = ingest_one(tmp_path, "src/m.jsonl")
    details = [r["detail"] for r in ledger]
    assert details[0].startswith("src/m.jsonl:2: Invalid control character") and "column 23" in details[0]
    assert " at at " not in details[0] and "\\t" in details[0]
    assert details[1] == "src/m.jsonl:3: 'text' is null; it must hold the document's text"
    assert details[2] == "src/m.jsonl:4: no 'text' field (fields: id, body)"
