"""Word (.docx) and Excel (.xlsx) readers: real .docx files shipped in python-docx's source distribution
(pinned, sha256-checked) and documents generated here with python-docx / openpyxl."""

from __future__ import annotations

from pathlib import Path

import docx
import openpyxl
import pytest

from vertical_dag.sources import FileRejected, ReadOptions
from vertical_dag.sources.word import OLE_MAGIC

from .test_sources_pdf import DOCX_SDIST, records, sdist_member


def make_docx(path: Path) -> Path:
    d = docx.Document()
    d.core_properties.title = "Supply Agreement"
    d.add_heading("Supply Agreement", level=0)
    d.add_paragraph("This agreement is made between the parties named below.")
    d.add_heading("1. Prices", level=1)
    table = d.add_table(rows=3, cols=3)
    for r, row in enumerate([("Item", "Unit", "Price"), ("Steel", "t", "640"), ("Copper", "t", "8,900")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    merged = table.cell(2, 1).merge(table.cell(2, 2))
    merged.text = "on request"
    d.add_heading("1.1 Payment", level=2)
    d.add_paragraph("Payment is due within 30 days.")
    d.save(str(path))
    return path


def test_real_docx_files_from_python_docx_sdist():
    good, bad = records(sdist_member(DOCX_SDIST, "features/steps/test_files/par-known-styles.docx"))
    assert not bad and "# Heading 1\nBody Text" in good[0].text and good[0].meta["headings"] == 1
    good, _ = records(sdist_member(DOCX_SDIST, "features/steps/test_files/tbl-cell-access.docx"))
    assert good[0].text.startswith("1 | 2 | 3\n4 | 5 | 6\n7 | 8 | 9") and good[0].meta["tables"] == 4
    assert "4 | 6" in good[0].text.split("\n")  # a horizontally merged cell counted once


def test_generated_docx_keeps_reading_order_headings_and_tables(tmp_path: Path):
    good, bad = records(make_docx(tmp_path / "agreement.docx"))
    assert not bad and len(good) == 1
    assert good[0].text.split("\n") == [
        "# Supply Agreement",
        "This agreement is made between the parties named below.",
        "# 1. Prices",
        "Item | Unit | Price",
        "Steel | t | 640",
        "Copper | on request",
        "## 1.1 Payment",
        "Payment is due within 30 days.",
    ]
    assert good[0].meta == {"headings": 3, "tables": 1, "title": "Supply Agreement"}


def test_binary_doc_and_broken_docx_are_rejected(tmp_path: Path):
    legacy = tmp_path / "old.doc"
    legacy.write_bytes(OLE_MAGIC + b"\x00" * 600)
    with pytest.raises(FileRejected) as err:
        records(legacy)
    assert err.value.reason == "legacy_word_format" and ".docx" in err.value.detail
    broken = tmp_path / "broken.docx"
    broken.write_bytes(make_docx(tmp_path / "ok.docx").read_bytes()[:700])
    with pytest.raises(FileRejected) as err:
        records(broken)
    assert err.value.reason == "invalid_docx"


def make_xlsx(path: Path) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "cases"
    ws.append([])  # a blank first row: the header is the first row with something in it
    ws.append(["id", "title", "summary", "year"])
    ws.append(["C1", "Smith v Jones", "A dispute over a fence.", 2019])
    ws.append([None, None, None, None])
    ws.append(["C2", "Re Brown", "Probate of a holographic will.", 2021.0])
    other = wb.create_sheet("notes")
    other.append(["remark"])
    other.append(["no summary column here"])
    wb.save(path)
    return path


def test_xlsx_rows_with_text_columns_and_a_sheet_without_them(tmp_path: Path):
    path = make_xlsx(tmp_path / "cases.xlsx")
    good, bad = records(path, ReadOptions(text_columns=("title", "summary")))
    assert [(r.key, r.location, r.text) for r in good] == [
        ("C1", "cases!row 3", "Smith v Jones\nA dispute over a fence."),
        ("C2", "cases!row 5", "Re Brown\nProbate of a holographic will."),
    ]
    assert good[0].meta == {"id": "C1", "year": 2019, "sheet": "cases"} and good[0].has_id
    assert [(b.location, b.reason) for b in bad] == [("sheet notes", "missing_text")]
    assert "'title', 'summary'" in bad[0].detail and "row 1" in bad[0].detail


def test_xlsx_one_document_per_sheet_and_legacy_xls(tmp_path: Path):
    good, bad = records(make_xlsx(tmp_path / "cases.xlsx"), ReadOptions(sheet_unit="sheet"))
    assert not bad and [(r.key, r.location) for r in good] == [("sheet:cases", "sheet cases"), ("sheet:notes", "sheet notes")]
    assert good[0].text.split("\n")[:2] == ["id\ttitle\tsummary\tyear", "C1\tSmith v Jones\tA dispute over a fence.\t2019"]
    legacy = tmp_path / "old.xls"
    legacy.write_bytes(OLE_MAGIC + b"\x00" * 600)
    with pytest.raises(FileRejected) as err:
        records(legacy)
    assert err.value.reason == "legacy_excel_format"
