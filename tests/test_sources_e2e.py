"""End to end: a folder holding every new kind of raw file, dropped into a project made by `vertical-dag init`
and ingested by the real CLI; every record is a document or a ledger row naming the file and page/member."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

from vertical_dag.records import read_ledger, read_parts
from vertical_dag.sources.word import OLE_MAGIC

from .conftest import run_cli
from .test_sources_archive import LINES, jsonl_bytes, make_zip
from .test_sources_office import make_docx, make_xlsx
from .test_sources_pdf import encrypted_pdf, scanned_pdf, two_column_pdf
from .test_sources_warc import make_warc

SOURCES = """  sources:
    - {name: pages, pdf_unit: page}
    - {name: sheets, text_columns: [title, summary]}
"""


def fill(raw: Path, tmp: Path) -> None:
    mixed = raw / "mixed"
    mixed.mkdir(parents=True)
    two_column_pdf(mixed / "paper.pdf")
    scanned_pdf(mixed / "scan.pdf", tmp)
    encrypted_pdf(mixed / "secret.pdf")
    (mixed / "cut.pdf").write_bytes((mixed / "paper.pdf").read_bytes()[:400])
    make_docx(mixed / "agreement.docx")
    (mixed / "old.doc").write_bytes(OLE_MAGIC + b"\x00" * 600)
    make_zip(mixed / "batch.zip")
    (mixed / "laws.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(LINES)))
    make_warc(mixed / "crawl.warc.gz", gzip=True)
    (mixed / "bomb.txt.gz").write_bytes(gzip.compress(b"A" * (8 << 20)))
    (raw / "pages").mkdir()
    two_column_pdf(raw / "pages" / "paper.pdf", pages=3)
    (raw / "sheets").mkdir()
    make_xlsx(raw / "sheets" / "cases.xlsx")


def test_every_new_kind_ingests_with_everything_accounted_for(project: Path, tmp_path: Path):
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("  sources: []\n", SOURCES))
    fill(project / "data/raw", tmp_path)
    m = json.loads(run_cli("run", "ingest", "--no-gate", "--json", cwd=project).stdout)
    docs = read_parts(project / "data/ingested/parts").to_pylist()
    ledger = read_ledger(project / "data/ingested/ledger").to_pylist()
    assert m["documents_in"] == m["documents_out"] + m["quarantined"] == len(docs) + len(ledger)
    assert m["dropped"] == 0 and m["files_total"] == 12
    uris = {d["uri"] for d in docs}
    assert {"mixed/paper.pdf:pages 1-4", "pages/paper.pdf:page 1", "pages/paper.pdf:page 2", "pages/paper.pdf:page 3", "mixed/agreement.docx",
            "mixed/batch.zip!docs/2020/laws.jsonl:1", "mixed/batch.zip!docs/2020/laws.jsonl:2", "mixed/batch.zip!docs/readme.md", "mixed/batch.zip!more.jsonl.gz:1",
            "mixed/batch.zip!inner.zip!deep/note.txt", "mixed/laws.jsonl.gz:1", "mixed/laws.jsonl.gz:2",
            "https://example.org/news", "https://example.cn/fagui", "https://example.org/robots.txt",
            "sheets/cases.xlsx:cases!row 3", "sheets/cases.xlsx:cases!row 5"} == uris
    assert len(docs) == len(uris) == 17  # and no two documents share an id
    assert len({d["doc_id"] for d in docs}) == 17
    by_detail = sorted((r["reason"], r["detail"].split(": ")[0]) for r in ledger)
    assert by_detail == sorted([
        ("no_text_layer", "mixed/scan.pdf"), ("encrypted_pdf", "mixed/secret.pdf"), ("invalid_pdf", "mixed/cut.pdf"),
        ("legacy_word_format", "mixed/old.doc"), ("archive_ratio", "mixed/bomb.txt.gz"),
        ("invalid_json", "mixed/batch.zip!docs/2020/laws.jsonl:3"), ("unsafe_member", "mixed/batch.zip!../escape.txt"),
        ("unsafe_member", "mixed/batch.zip!/etc/absolute.txt"), ("unsupported_format", "mixed/batch.zip!slides.pptx"),
        ("empty_file", "mixed/batch.zip!empty.txt"), ("invalid_json", "mixed/laws.jsonl.gz:3"),
        ("http_error", "mixed/crawl.warc.gz:record 5"), ("not_html", "mixed/crawl.warc.gz:record 6"),
        ("duplicate_id", "mixed/crawl.warc.gz:record 8"), ("missing_text", "sheets/cases.xlsx:sheet notes"),
    ])
    scan = next(r for r in ledger if r["reason"] == "no_text_layer")
    assert "OCR" in scan["detail"] and "2 pages" in scan["detail"]
    assert len({r["doc_id"] for r in ledger}) == len(ledger)
    page2 = next(d for d in docs if d["uri"] == "pages/paper.pdf:page 2")
    assert "Journal of Contract Law" not in page2["text"] and json.loads(page2["meta"])["page"] == 2
    # Incremental: nothing changed, nothing re-read; a removed archive takes its members' rows with it.
    again = json.loads(run_cli("run", "ingest", "--no-gate", "--json", cwd=project).stdout)
    assert again["files_skipped_unchanged"] == 12 and again["documents_out"] == m["documents_out"]
    (project / "data/raw/mixed/batch.zip").unlink()
    shutil.rmtree(project / "data/raw/sheets")
    after = json.loads(run_cli("run", "ingest", "--no-gate", "--json", cwd=project).stdout)
    assert after["documents_out"] == m["documents_out"] - 5 - 2 and after["quarantined"] == m["quarantined"] - 5 - 1
