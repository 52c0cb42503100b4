"""Readers per raw format, encodings, and every kind of bad input becoming a named bad record or rejection."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vertical_dag.params import IngestParams, SourceParams
from vertical_dag.records import read_ledger
from vertical_dag.sources import BadRecord, FileRejected, RawRecord, ReadOptions, detect_format, read
from vertical_dag.sources.encoding import detect
from vertical_dag.sources.html import html_to_text
from vertical_dag.stages.ingest import ingest_file, part_name

SIMPLIFIED = "第一条　为了保护民事主体的合法权益，调整民事关系，维护社会和经济秩序，制定本法。\n第二条　民法调整平等主体之间的人身关系和财产关系。\n"
TRADITIONAL = "第一條　為了保護民事主體的合法權益，調整民事關係，維護社會和經濟秩序，制定本法。\n第二條　民法調整平等主體之間的人身關係和財產關係。\n"
ENCODINGS = ("utf-8", "gb18030", "utf-16", "big5")


def records(path: Path, opts: ReadOptions | None = None, fmt: str = "auto") -> tuple[list[RawRecord], list[BadRecord]]:
    out = list(read(path, opts or ReadOptions(), fmt))
    return [r for r in out if isinstance(r, RawRecord)], [r for r in out if isinstance(r, BadRecord)]


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# ---------------------------------------------------------------- JSONL


def test_jsonl_good_records_keep_ids_and_meta(tmp_path: Path):
    lines = [{"id": "a1", "text": "甲", "law": "民法典", "n": 3}, {"text": "no id here"}, {"id": 7, "text": "seven"}]
    path = write(tmp_path / "x.jsonl", "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n")
    good, bad = records(path)
    assert not bad
    assert [r.key for r in good] == ["a1", "line:2", "7"]
    assert [r.location for r in good] == ["1", "2", "3"]
    assert good[0].meta == {"id": "a1", "law": "民法典", "n": 3, "encoding": "utf-8"} and good[0].has_id and not good[1].has_id


def test_jsonl_bad_lines_are_named(tmp_path: Path):
    text = "\n".join([
        '{"id": 1, "text": "ok"}',
        '{"id": 2, "text": "broken" "x": 1}',  # invalid: missing comma
        '[1, 2, 3]',  # not an object
        '{"id": 4, "body": "no text field"}',
        '{"id": 5, "text": null}',
        '{"id": 6, "text": 42}',
        '{"id": 7, "text": "fine again"}',
        '{"id": 8, "text": "cut off in the midd',  # truncated last line, no newline
    ])
    good, bad = records(write(tmp_path / "x.jsonl", text))
    assert [r.key for r in good] == ["1", "7"]
    got = {b.location: b.reason for b in bad}
    assert got == {"2": "invalid_json", "3": "not_an_object", "4": "missing_text", "5": "missing_text",
                   "6": "invalid_text", "8": "truncated_json"}
    assert "Expecting ',' delimiter" in next(b.detail for b in bad if b.location == "2")


def test_jsonl_invalid_utf8_line_is_an_encoding_error(tmp_path: Path):
    data = b'{"id": 1, "text": "ok"}\n{"id": 2, "text": "\xff\xfe bad"}\n{"id": 3, "text": "ok too"}\n'
    good, bad = records(write(tmp_path / "x.jsonl", data))
    assert [r.key for r in good] == ["1", "3"]
    assert [(b.location, b.reason) for b in bad] == [("2", "encoding_error")]


def test_jsonl_line_in_another_encoding_past_the_sample(tmp_path: Path):
    ascii_lines = b"".join(b'{"id": %d, "text": "plain ascii line number %d"}\n' % (i, i) for i in range(3000))  # > 64 KiB
    late = '{"id": "gb", "text": "民法典第一条"}\n'.encode("gb18030")
    good, bad = records(write(tmp_path / "x.jsonl", ascii_lines + late + b'{"id": "z", "text": "\xff\xfe"}\n'))
    assert good[-1].key == "gb" and good[-1].text == "民法典第一条"
    assert [(b.location, b.reason) for b in bad] == [("3002", "encoding_error")]


def test_json_array_file(tmp_path: Path):
    path = write(tmp_path / "x.json", '[\n  {"id": "a", "text": "one"},\n  "oops",\n  {"text": "three"}\n]\n')
    good, bad = records(path)
    assert [(r.key, r.text) for r in good] == [("a", "one"), ("row:3", "three")]
    assert [(b.location, b.reason) for b in bad] == [("row 2", "not_an_object")]


@pytest.mark.parametrize("encoding", ["gb18030", "utf-16"])
def test_jsonl_in_other_encodings(tmp_path: Path, encoding: str):
    lines = [json.dumps({"id": i, "text": t}, ensure_ascii=False) for i, t in enumerate(SIMPLIFIED.splitlines())]
    good, bad = records(write(tmp_path / "x.jsonl", ("\n".join(lines) + "\n").encode(encoding)))
    assert not bad and [r.text for r in good] == SIMPLIFIED.splitlines()


# ---------------------------------------------------------------- encodings of text files


@pytest.mark.parametrize(
    "name, data, expected",
    [
        ("utf8", SIMPLIFIED.encode("utf-8"), SIMPLIFIED),
        ("utf8_bom", SIMPLIFIED.encode("utf-8-sig"), SIMPLIFIED),
        ("gb18030", SIMPLIFIED.encode("gb18030"), SIMPLIFIED),
        ("gbk", SIMPLIFIED.encode("gbk"), SIMPLIFIED),
        ("utf16_bom", SIMPLIFIED.encode("utf-16"), SIMPLIFIED),
        ("utf16le_no_bom", SIMPLIFIED.encode("utf-16-le"), SIMPLIFIED),
        ("utf16be_no_bom", SIMPLIFIED.encode("utf-16-be"), SIMPLIFIED),
        ("utf16le_english_no_bom", b"Plain English text.\n".decode().encode("utf-16-le"), "Plain English text.\n"),
        ("big5", TRADITIONAL.encode("big5"), TRADITIONAL),
    ],
)
def test_text_file_encodings_decode_correctly(tmp_path: Path, name: str, data: bytes, expected: str):
    good, bad = records(write(tmp_path / f"{name}.txt", data))
    assert not bad and len(good) == 1
    assert good[0].text == expected
    assert good[0].key == "doc" and good[0].location == ""


def test_big5_is_not_mistaken_for_gb18030():
    data = TRADITIONAL.encode("big5")
    data.decode("gb18030")  # the trap: Big5 bytes are valid GB18030 too
    assert detect(data, ENCODINGS, final=True) == "big5"


def test_csv_in_gbk(tmp_path: Path):
    path = write(tmp_path / "x.csv", ("id,text\n1,中华人民共和国\n2,民法典\n").encode("gbk"))
    good, bad = records(path)
    assert not bad and [r.text for r in good] == ["中华人民共和国", "民法典"]


@pytest.mark.parametrize("data", [os.urandom(4096), bytes(range(1, 32)) * 200], ids=["nul_bytes", "control_bytes"])
def test_binary_file_with_text_extension_is_rejected(tmp_path: Path, data: bytes):
    path = write(tmp_path / "photo.txt", data)
    with pytest.raises(FileRejected) as err:
        records(path)
    assert err.value.reason == "binary_file"


# ---------------------------------------------------------------- CSV, Parquet, HTML, SQLite, Markdown


def test_csv_broken_rows_are_named(tmp_path: Path):
    text = 'id,text,tag\n1,first,a\n2,"second, with comma",b\n3,too,many,fields\n4,short\n5,"multi\nline",c\n'
    good, bad = records(write(tmp_path / "x.csv", text))
    assert [r.key for r in good] == ["1", "2", "5"]
    assert good[2].text == "multi\nline" and good[0].meta == {"id": "1", "tag": "a", "encoding": "utf-8"}
    assert [(b.location, b.reason) for b in bad] == [("row 3", "bad_row"), ("row 4", "bad_row")]
    assert "expected 3 fields, got 4" in bad[0].detail


def test_csv_unclosed_quote_and_tsv(tmp_path: Path):
    good, bad = records(write(tmp_path / "x.csv", 'id,text\n1,ok\n2,"never closed\n3,not lost\n'))
    assert [r.key for r in good] == ["1", "3"] and [(b.location, b.reason) for b in bad] == [("row 2", "bad_row")]
    good, bad = records(write(tmp_path / "y.tsv", "id\ttext\n1\ta, b, c\n"))
    assert not bad and good[0].text == "a, b, c"
    with pytest.raises(FileRejected) as err:
        records(write(tmp_path / "z.csv", "id,body\n1,x\n"))
    assert err.value.reason == "missing_text"


def test_parquet_rows(tmp_path: Path):
    table = pa.table({"id": [10, 11, 12], "text": ["a", None, "c"], "year": [1990, 2000, 2010]})
    pq.write_table(table, tmp_path / "x.parquet")
    good, bad = records(tmp_path / "x.parquet")
    assert [(r.key, r.location, r.text, r.meta["year"]) for r in good] == [("10", "row 1", "a", 1990), ("12", "row 3", "c", 2010)]
    assert [(b.location, b.reason) for b in bad] == [("row 2", "missing_text")]
    with pytest.raises(FileRejected) as err:
        records(write(tmp_path / "bad.parquet", b"PAR1 not really parquet"))
    assert err.value.reason == "invalid_parquet"


def test_html_boilerplate_is_dropped(tmp_path: Path):
    html = """<!doctype html><html lang="zh"><head><title>民法典 - 法律库</title>
    <style>body{color:red}</style><script>var tracking = 1;</script></head><body>
    <header>SITE HEADER</header><nav><a href="/">Home</a> | <a href="/laws">Laws</a></nav>
    <main><h1>第一章　基本规定</h1><p>第一条　为了保护民事主体的
    合法权益，<b>调整</b>民事关系。</p><ul><li>one</li><li>two</li></ul></main>
    <aside>Related laws</aside><form><label>Search</label><input name=q></form>
    <footer>Copyright 2024</footer><script>track()</script></body></html>"""
    good, _ = records(write(tmp_path / "page.html", html))
    text = good[0].text
    assert text.splitlines() == ["第一章　基本规定", "第一条　为了保护民事主体的合法权益，调整民事关系。", "one", "two"]
    for junk in ("SITE HEADER", "Home", "tracking", "color", "Related", "Search", "Copyright", "track()"):
        assert junk not in text
    assert good[0].meta["title"] == "民法典 - 法律库" and good[0].meta["html_lang"] == "zh"
    assert html_to_text("<p>a</p><p>b</p>")[0] == "a\nb"


def test_html_parts_marked_by_aria_role_are_dropped():
    page = """<body><div class="related" role="navigation"><a>index</a> | <a>next</a></div>
    <div class="document"><div role="main"><h1>Routing tasks<a class="headerlink" href="#routing">¶</a></h1>
    <p>Tasks can be routed to queues (<a href="#q">#</a>).</p></div></div>
    <div class="sphinxsidebar" role="navigation"><h3>Table of contents</h3><div role="search">Quick search</div></div>
    <div role="contentinfo">&copy; Copyright 2009</div></body>"""
    assert html_to_text(page)[0] == "Routing tasks\nTasks can be routed to queues ()."


def test_markdown_title(tmp_path: Path):
    good, _ = records(write(tmp_path / "note.md", "Intro line\n\n## 合同法概述\n\nBody.\n"))
    assert good[0].meta["title"] == "合同法概述" and good[0].text.startswith("Intro line")


def _make_db(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE meta_info (k TEXT, v TEXT)")
    con.execute("CREATE TABLE articles (id INTEGER PRIMARY KEY, law TEXT, article_text TEXT, text TEXT)")
    con.executemany("INSERT INTO articles VALUES (?, ?, ?, ?)",
                    [(1, "民法典", "第一条 内容", "full one"), (2, "刑法", "第二条 内容", None), (3, "民法典", "第三条", "full three")])
    con.commit()
    con.close()


def test_sqlite_default_query_and_param_query(tmp_path: Path):
    db = tmp_path / "laws.db"
    _make_db(db)
    before = db.read_bytes()
    good, bad = records(db)  # default: first table with a 'text' column
    assert [(r.key, r.text) for r in good] == [("1", "full one"), ("3", "full three")]
    assert [(b.location, b.reason) for b in bad] == [("row 2", "missing_text")]
    q = ReadOptions(query="SELECT id, law, article_text AS text FROM articles WHERE law = '民法典' ORDER BY id")
    good, bad = records(db, q)
    assert [(r.key, r.text, r.meta) for r in good] == [("1", "第一条 内容", {"id": 1, "law": "民法典", "encoding": "utf-8"}),
                                                       ("3", "第三条", {"id": 3, "law": "民法典", "encoding": "utf-8"})]
    with pytest.raises(FileRejected) as err:  # opened read-only: even a sneaky write fails
        records(db, ReadOptions(query="WITH x AS (SELECT 1) DELETE FROM articles"))
    assert err.value.reason == "query_failed"
    assert db.read_bytes() == before
    with pytest.raises(FileRejected) as err:
        records(write(tmp_path / "fake.sqlite", b"not a database at all, just some words" * 20))
    assert err.value.reason == "invalid_sqlite"


# ---------------------------------------------------------------- format detection and file-level checks


def test_auto_format_by_extension_and_unsupported(tmp_path: Path):
    assert [detect_format(f"a{ext}") for ext in (".ndjson", ".json", ".TSV", ".markdown", ".rst", ".htm", ".sqlite3")] == [
        "jsonl", "jsonl", "csv", "markdown", "text", "html", "sqlite"]
    assert detect_format("a.whatever", "jsonl") == "jsonl"
    with pytest.raises(FileRejected) as err:
        detect_format("slides.pptx")
    assert err.value.reason == "unsupported_format"


def _ingest_one(tmp_path: Path, name: str, data: bytes, **params) -> tuple[int, list[dict]]:
    raw = write(tmp_path / "raw" / "src" / name, data)
    p = IngestParams(**params)
    part, ledger = tmp_path / "out" / "p.parquet", tmp_path / "out" / "ledger" / "p.parquet"
    res = ingest_file(raw, f"src/{name}", "src", p, part, ledger, log=__import__("logging").getLogger("t"))
    assert pq.read_table(part).num_rows == res.documents_out
    return res.documents_out, read_ledger(ledger.parent).to_pylist()


@pytest.mark.parametrize(
    "name, data, params, reason, detail",
    [
        ("empty.txt", b"", {}, "empty_file", "src/empty.txt: 0 bytes"),
        ("blank.jsonl", b"\n\n", {}, "empty_file", "src/blank.jsonl: no records"),
        ("long.txt", ("长" * 120).encode(), {"max_doc_chars": 100}, "too_long", "src/long.txt: 120 chars > max_doc_chars 100"),
        ("tiny.txt", b" hi ", {"min_doc_chars": 5}, "too_short", "src/tiny.txt: 2 chars < min_doc_chars 5"),
        ("big.txt", b"x" * 3000, {"max_file_mb": 0.001}, "file_too_large", "src/big.txt: 0.0 MB > max_file_mb 0.001"),
        ("deck.pptx", b"PK\x03\x04", {}, "unsupported_format", "src/deck.pptx: no reader for extension '.pptx'"),
        ("bin.txt", b"\x00\x01\x02" * 100, {}, "binary_file", "src/bin.txt: NUL bytes"),
        ("x.jsonl", b'{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', {}, "duplicate_id", "src/x.jsonl:2: id '1' already used at 1"),
        ("x.jsonl", b'{"id": 1, "text": "a"}\n{"id": 2, "text": "b",\n', {}, "truncated_json", "src/x.jsonl:2: "),
    ],
)
def test_file_level_checks_become_ledger_rows(tmp_path: Path, name, data, params, reason, detail):
    docs, ledger = _ingest_one(tmp_path, name, data, **params)
    assert [e["reason"] for e in ledger] == [reason]
    assert ledger[0]["detail"].startswith(detail) and ledger[0]["action"] == "quarantined"
    assert docs == (1 if reason in ("duplicate_id", "truncated_json") else 0)
    if reason == "duplicate_id":
        assert ledger[0]["ref_doc_id"] and ledger[0]["ref_doc_id"] != ledger[0]["doc_id"]


def test_part_names_are_stable_and_safe():
    assert part_name("china_law/1990s.jsonl") == part_name("china_law/1990s.jsonl")
    assert part_name("a/b c.jsonl") != part_name("a/b_c.jsonl")
    name = part_name("法律/第 1 批/数据.jsonl")
    assert "/" not in name and " " not in name and name.isascii()


def test_source_params_reach_the_reader(tmp_path: Path):
    """Through ingest's own translation of params (read_options), not options built by hand."""
    from vertical_dag.params import IngestParams
    from vertical_dag.stages.ingest import read_options

    path = write(tmp_path / "x.data", '{"uid": "u1", "body": "hello", "a": 1, "b": 2}\n')
    sp = SourceParams(name="s", format="jsonl", text_field="body", id_field="uid", meta_fields=["a"])
    fmt, opts = read_options(IngestParams(sources=[sp], max_doc_chars=1000), "s")
    assert opts.max_doc_chars == 1000 and fmt == "jsonl"
    good, _ = records(path, opts, fmt)
    assert (good[0].key, good[0].text, good[0].meta) == ("u1", "hello", {"a": 1, "encoding": "utf-8"})


def test_text_without_a_known_extension_is_read_as_text(tmp_path: Path):
    """README, a changelog, notes.v2: plain text by content when the name says nothing; also inside a .gz."""
    import gzip

    readme = write(tmp_path / "README", "A project's readme.\nSecond line.\n")
    good, bad = records(readme)
    assert [r.text.strip() for r in good] == ["A project's readme.\nSecond line."] and not bad
    log = tmp_path / "pkg.changelog.gz"
    log.write_bytes(gzip.compress(b"pkg (1.2) stable; urgency=low\n\n  * Fixed a crash.\n"))
    good, bad = records(log)
    assert len(good) == 1 and "Fixed a crash" in good[0].text and not bad
    with pytest.raises(FileRejected) as err:  # bytes that are not text keep the old reason
        records(write(tmp_path / "blob.xyz", b"\x00\x01\x02\xff" * 50))
    assert err.value.reason == "unsupported_format"
