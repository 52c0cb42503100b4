"""Ingest throughput (MB/s) and peak memory on the example corpus and on a generated 200 MB JSONL, then per
raw format on the same generated English documents written as JSONL (the baseline), CSV, gzip'd JSONL, a zip
of JSONL files, a gzip'd WARC of HTML pages, .docx, .xlsx and PDF.

    .venv/bin/python benchmarks/ingest.py [--mb 200] [--format-mb 4] [--only-formats] [--keep]
    .venv/bin/python benchmarks/ingest.py --pdf-dir FOLDER   # pypdf against PDFium on real PDFs
    .venv/bin/python benchmarks/ingest.py --html-dir FOLDER  # main-text extraction on Sphinx HTML pages

Per format: MB/s of input bytes read, and text throughput (characters of document text out per second)
as a ratio to the JSONL baseline run side by side.

Each case runs `vertical-dag run ingest` logic (run_stage, gate off) in its own subprocess inside a temporary
project, so the peak RSS (VmHWM, else ru_maxrss) of one case is not inflated by another or by the data generator.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARAMS = """project: {name: bench, domain: general, seed: 1}
ingest:
  sources:
    - {name: china_law, format: jsonl, text_field: text, id_field: id}
  max_doc_chars: 2000000
"""


def make_project(root: Path) -> Path:
    (root / "data" / "raw").mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(PARAMS)
    (root / "dvc.yaml").write_text("stages: {}\n")
    return root


def generate_jsonl(path: Path, mb: float, seed: int = 0) -> int:
    """Mixed Chinese/English documents of 200-4000 characters, written line by line until `mb` is reached."""
    import numpy as np
    import orjson

    rng = np.random.default_rng(seed)
    # One big pool of common CJK characters (U+4E00..U+7FFF) and English words; documents are random slices.
    cjk = rng.integers(0x4E00, 0x8000, size=4_000_000, dtype=np.uint32)
    cjk[rng.random(cjk.size) < 0.06] = ord("，")
    cjk[rng.random(cjk.size) < 0.03] = ord("。")
    cjk_pool = cjk.astype("<u4").tobytes().decode("utf-32-le")
    words = np.array("the law shall apply to any contract party who agrees under article section clause court "
                     "provision liability damages notice within days of receipt such person may request".split())
    eng_pool = " ".join(words[rng.integers(0, words.size, size=800_000)])
    target = int(mb * 2**20)
    written, n = 0, 0
    with open(path, "wb") as f:
        while written < target:
            lengths = rng.integers(200, 4000, size=1024)
            starts_c = rng.integers(0, len(cjk_pool) - 4000, size=1024)
            starts_e = rng.integers(0, len(eng_pool) - 4000, size=1024)
            english = rng.random(1024) < 0.3
            lines = []
            for i in range(1024):
                L, s = int(lengths[i]), int(starts_c[i])
                text = eng_pool[starts_e[i]:starts_e[i] + L] if english[i] else cjk_pool[s:s + L]
                lines.append(orjson.dumps({"id": f"doc-{n}", "text": text, "kind": "en" if english[i] else "zh", "n": n}))
                n += 1
            block = b"\n".join(lines) + b"\n"
            f.write(block)
            written += len(block)
    return n


def peak_rss_mb() -> float:
    """High-water RSS of this process. VmHWM belongs to this program's memory map; ru_maxrss on Linux also
    keeps the parent's peak across fork+exec, which would charge the data generator to the first case."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(root: Path) -> None:
    """Run ingest once in `root` and print its metrics and this process's peak RSS (one JSON line)."""
    import pyarrow.compute as pc

    import vertical_dag.sources  # noqa: F401  (imports count in the baseline, not in the peak)
    import vertical_dag.stages.ingest  # noqa: F401
    from vertical_dag.project import Project
    from vertical_dag.records import read_parts
    from vertical_dag.stages.context import run_stage

    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    metrics = run_stage("ingest", Project(root), gate=False)
    wall = time.perf_counter() - t0
    peak = peak_rss_mb()
    texts = read_parts(root / "data" / "ingested" / "parts", columns=["text"])["text"]
    chars = int(pc.sum(pc.utf8_length(texts)).as_py() or 0) if len(texts) else 0
    print(json.dumps({"metrics": metrics, "wall_s": wall, "peak_rss_mb": peak, "rss_after_imports_mb": rss_before,
                      "text_chars": chars}))


def run_case(name: str, root: Path, quiet: bool = False) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", str(root)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: ingest failed\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    m = out["metrics"]
    mb = m["bytes_read"] / 2**20
    if quiet:
        return out
    print(f"{name:>14}: {mb:8.1f} MB, {m['documents_out']:>8} docs, {m['quarantined']} quarantined | "
          f"read {m['mb_per_s']:6.1f} MB/s ({m['docs_per_s']:.0f} docs/s), stage {out['wall_s']:.1f} s "
          f"-> {mb / out['wall_s']:.1f} MB/s end to end | peak RSS {out['peak_rss_mb']:.0f} MB "
          f"({out['rss_after_imports_mb']:.0f} MB after imports)")
    return out


def english_docs(mb: float, seed: int = 1) -> list[str]:
    """Documents of 500-3000 characters of English words (fonts for PDF need Latin-1), about `mb` MB in all."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = np.array(("the court held that any party to a contract who fails to deliver within the agreed period shall "
                      "pay damages unless the delay was caused by events beyond its control notice must be given in "
                      "writing").split())
    docs, size = [], 0
    while size < mb * 2**20:
        text = " ".join(words[rng.integers(0, words.size, size=int(rng.integers(90, 550)))]).capitalize() + "."
        docs.append(text)
        size += len(text) + 20
    return docs


def write_format(fmt: str, docs: list[str], folder: Path) -> None:
    """`docs` written into `folder` as raw files of one format."""
    import csv
    import gzip
    import zipfile

    import orjson

    folder.mkdir(parents=True, exist_ok=True)
    lines = b"".join(orjson.dumps({"id": f"d{i}", "text": t}) + b"\n" for i, t in enumerate(docs))
    chunks = [docs[i:i + 200] for i in range(0, len(docs), 200)]
    if fmt == "jsonl":
        (folder / "docs.jsonl").write_bytes(lines)
    elif fmt == "csv":
        with open(folder / "docs.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "text"])
            w.writerows([f"d{i}", t] for i, t in enumerate(docs))
    elif fmt == "jsonl.gz":
        (folder / "docs.jsonl.gz").write_bytes(gzip.compress(lines, 6))
    elif fmt == "zip":
        with zipfile.ZipFile(folder / "docs.zip", "w", zipfile.ZIP_DEFLATED) as z:
            for n, chunk in enumerate(chunks):
                z.writestr(f"part{n}/docs.jsonl", b"".join(orjson.dumps({"id": f"d{n}-{i}", "text": t}) + b"\n"
                                                          for i, t in enumerate(chunk)))
    elif fmt == "warc.gz":
        _write_warc(folder / "crawl.warc.gz", docs)
    else:
        for n, chunk in enumerate(chunks):
            {"docx": _write_docx, "xlsx": _write_xlsx, "pdf": _write_pdf}[fmt](folder / f"docs{n}.{fmt}", chunk)


def _write_warc(path: Path, docs: list[str]) -> None:
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        for i, text in enumerate(docs):
            body = f"<html><head><title>Page {i}</title></head><body><nav>Home</nav><p>{text}</p></body></html>".encode()
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(f"https://example.org/{i}", "response", payload=io.BytesIO(body),
                                                http_headers=headers))


def _write_docx(path: Path, docs: list[str]) -> None:
    import docx

    d = docx.Document()
    for i, text in enumerate(docs):
        d.add_heading(f"Section {i}", level=1)
        d.add_paragraph(text)
    d.save(str(path))


def _write_xlsx(path: Path, docs: list[str]) -> None:
    import openpyxl

    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("docs")
    ws.append(["id", "text"])
    for i, text in enumerate(docs):
        ws.append([f"{path.stem}-{i}", text])
    wb.save(path)


def _write_pdf(path: Path, docs: list[str]) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=10)
    pdf.add_page()
    for text in docs:
        pdf.multi_cell(0, 5, text)
        pdf.ln(3)
    pdf.output(str(path))


FORMATS = ["jsonl", "csv", "jsonl.gz", "zip", "warc.gz", "docx", "xlsx", "pdf"]


def run_formats(tmp: Path, mb: float) -> None:
    docs = english_docs(mb)
    print(f"per format: {len(docs)} generated English documents, {sum(map(len, docs)) / 2**20:.1f} MB of text; "
          "baseline: the same documents as JSONL")
    baseline = None
    for fmt in FORMATS:
        root = make_project(tmp / f"fmt-{fmt.replace('.', '_')}")
        write_format(fmt, docs, root / "data" / "raw" / "bench")
        out = run_case(fmt, root, quiet=True)
        m = out["metrics"]
        read_s = m["bytes_read"] / 2**20 / m["mb_per_s"] if m["mb_per_s"] else out["wall_s"]
        chars_per_s = out["text_chars"] / max(read_s, 1e-9)
        baseline = baseline or chars_per_s
        print(f"{fmt:>10}: {m['bytes_read'] / 2**20:7.2f} MB in, {m['documents_out']:>6} docs, "
              f"{m['quarantined']} quarantined | {m['mb_per_s']:7.2f} MB/s of input, "
              f"{chars_per_s / 2**20:6.2f} M chars/s of text = {chars_per_s / baseline:5.2f}x jsonl")


def compare_pdf_engines(folder: Path) -> None:
    """pypdf against PDFium (pypdfium2, the reader's choice) on every PDF under `folder`: time and characters."""
    import logging

    import pypdfium2 as pdfium
    try:
        import pypdf
    except ImportError:
        print("pdf engines: pypdf is not installed; skipped")
        return
    logging.disable(logging.WARNING)
    files = sorted(folder.rglob("*.pdf"))
    totals = {"pdfium": [0.0, 0, 0], "pypdf": [0.0, 0, 0]}  # seconds, characters, files failed

    def run(name: str, extract) -> None:
        t0 = time.perf_counter()
        try:
            totals[name][1] += len(extract())
        except Exception:  # a broken sample PDF counts as a failure of that engine
            totals[name][2] += 1
        totals[name][0] += time.perf_counter() - t0

    for f in files:
        run("pdfium", lambda f=f: "".join(p.get_textpage().get_text_bounded() for p in pdfium.PdfDocument(str(f))))
        run("pypdf", lambda f=f: "".join(p.extract_text() or "" for p in pypdf.PdfReader(f).pages))
    mb = sum(f.stat().st_size for f in files) / 2**20
    base = totals["pypdf"][0]
    for name, (secs, chars, failed) in totals.items():
        print(f"{name:>8}: {len(files)} PDFs, {mb:.1f} MB in {secs:6.2f} s = {mb / secs:6.2f} MB/s, {chars} characters, "
              f"{failed} failed | {base / secs:5.1f}x pypdf")


def _f1(got: str, truth: str) -> tuple[float, float]:
    """Bag-of-words precision and recall of `got` against `truth` (words: runs of letters and digits, so markup
    splitting "celery.app" into spans does not count)."""
    import re
    from collections import Counter

    g, t = Counter(re.findall(r"\w+", got.lower())), Counter(re.findall(r"\w+", truth.lower()))
    common = sum((g & t).values())
    return common / max(1, sum(g.values())), common / max(1, sum(t.values()))


def compare_html_extractors(folder: Path) -> None:
    """Main-text quality on Sphinx HTML pages under `folder`: the page's `div[role=main]` is the truth; the
    reader's extractor (sources/html.py) and trafilatura (when importable) each get the whole page."""
    from selectolax.lexbor import LexborHTMLParser

    from vertical_dag.sources.html import html_to_text
    try:
        import trafilatura
    except ImportError:
        trafilatura = None
    engines = {"html.py": lambda page: html_to_text(page)[0]}
    if trafilatura is not None:
        engines["trafilatura"] = lambda page: trafilatura.extract(page) or ""
    scores = {name: [0.0, 0.0, 0.0] for name in engines}  # precision, recall, seconds
    pages = 0
    for path in sorted(folder.rglob("*.html")):
        page = path.read_text(encoding="utf-8", errors="replace")
        tree = LexborHTMLParser(page)
        main = tree.css_first("div[role=main]") or tree.css_first("div.body")
        if main is None:
            continue
        for link in main.css("a.headerlink"):
            link.decompose()
        truth = main.text(separator=" ")
        if len(truth.split()) < 50:
            continue
        pages += 1
        for name, extract in engines.items():
            t0 = time.perf_counter()
            p, r = _f1(extract(page), truth)
            scores[name][0] += p
            scores[name][1] += r
            scores[name][2] += time.perf_counter() - t0
    if not pages:
        print("html extractors: no Sphinx pages found")
        return
    for name, (p, r, secs) in scores.items():
        p, r = p / pages, r / pages
        print(f"{name:>12}: {pages} pages, precision {p:.3f}, recall {r:.3f}, F1 {2 * p * r / max(p + r, 1e-9):.3f}, "
              f"{secs:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200.0, help="size of the generated JSONL")
    ap.add_argument("--format-mb", type=float, default=4.0, help="text per format in the per-format runs")
    ap.add_argument("--only-formats", action="store_true", help="skip the example and the big JSONL")
    ap.add_argument("--pdf-dir", type=Path, help="compare PDF text engines on the PDFs under this folder, then stop")
    ap.add_argument("--html-dir", type=Path, help="compare HTML main-text extractors on Sphinx pages there, then stop")
    ap.add_argument("--keep", action="store_true", help="keep the temporary projects")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child))
        return
    if args.pdf_dir:
        compare_pdf_engines(args.pdf_dir)
        return
    if args.html_dir:
        compare_html_extractors(args.html_dir)
        return
    tmp = Path(tempfile.mkdtemp(prefix="vdag-bench-"))
    try:
        if args.only_formats:
            run_formats(tmp, args.format_mb)
            return
        example = REPO / "data" / "raw" / "china_law"
        if example.is_dir() and any(example.glob("*.jsonl")):
            root = make_project(tmp / "example")
            shutil.copytree(example, root / "data" / "raw" / "china_law")
            run_case("example", root)
        else:
            print("example: data/raw/china_law not found (run `vertical-dag example fetch --no-model`); skipped")
        root = make_project(tmp / "synthetic")
        t0 = time.perf_counter()
        (root / "data" / "raw" / "synthetic").mkdir()
        n = generate_jsonl(root / "data" / "raw" / "synthetic" / "big.jsonl", args.mb)
        print(f"generated {args.mb:.0f} MB JSONL ({n} documents) in {time.perf_counter() - t0:.1f} s")
        run_case(f"jsonl {args.mb:.0f} MB", root)
        rerun = run_case("unchanged", root)  # incremental: nothing to read, only fingerprints checked
        assert rerun["metrics"]["files_skipped_unchanged"] == 1
        run_formats(tmp, args.format_mb)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
