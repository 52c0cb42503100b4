"""Compressed files and archives: members read one by one with their own locations, unsafe and unknown
members quarantined one by one, and limits against archive bombs."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import tarfile
import zipfile
from pathlib import Path

import pytest
import zstandard

from vertical_dag.sources import FileRejected, ReadOptions, detect_format

from .test_sources_pdf import records

LINES = [{"id": "a", "text": "第一条 甲"}, {"text": "no id"}, '{"id": "c", "text": broken}']


def jsonl_bytes(rows: list) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows).encode() + b"\n"


def make_zip(path: Path) -> Path:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("deep/note.txt", "a note two archives down")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("docs/", "")  # a folder entry: not a member to read
        z.writestr("docs/2020/laws.jsonl", jsonl_bytes(LINES))
        z.writestr("docs/readme.md", "# Read me\nhello")
        z.writestr("../escape.txt", "must never be read")
        z.writestr("/etc/absolute.txt", "nor this")
        z.writestr("slides.pptx", b"PK\x03\x04 not a format we read")
        z.writestr("more.jsonl.gz", gzip.compress(jsonl_bytes([{"id": "z", "text": "zipped and gzipped"}])))
        z.writestr("inner.zip", inner.getvalue())
        z.writestr("empty.txt", "")
    return path


def test_zip_members_are_read_one_by_one_and_unsafe_paths_refused(tmp_path: Path):
    good, bad = records(make_zip(tmp_path / "batch.zip"))
    assert [(r.key, r.location) for r in good] == [
        ("docs/2020/laws.jsonl!a", "!docs/2020/laws.jsonl:1"),
        ("docs/2020/laws.jsonl!line:2", "!docs/2020/laws.jsonl:2"),
        ("docs/readme.md!doc", "!docs/readme.md"),
        ("more.jsonl.gz!z", "!more.jsonl.gz:1"),
        ("inner.zip!deep/note.txt!doc", "!inner.zip!deep/note.txt"),
    ]
    assert good[2].meta["title"] == "Read me" and good[4].text == "a note two archives down"
    assert [(b.location, b.reason) for b in bad] == [
        ("!docs/2020/laws.jsonl:3", "invalid_json"),
        ("!../escape.txt", "unsafe_member"),
        ("!/etc/absolute.txt", "unsafe_member"),
        ("!slides.pptx", "unsupported_format"),
        ("!empty.txt", "empty_file"),
    ]
    assert "climbs out" in bad[1].detail and "absolute" in bad[2].detail
    assert len({b.key for b in bad}) == len(bad)  # every bad member has its own ledger key
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()


@pytest.mark.parametrize("suffix,compress", [
    (".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress),
    (".zst", lambda b: zstandard.ZstdCompressor().compress(b)),
])
def test_compressed_jsonl_reads_like_the_plain_file(tmp_path: Path, suffix: str, compress):
    plain = tmp_path / "laws.jsonl"
    plain.write_bytes(jsonl_bytes(LINES))
    packed = tmp_path / f"laws.jsonl{suffix}"
    packed.write_bytes(compress(plain.read_bytes()))
    assert detect_format(packed) == "compressed"
    good, bad = records(packed)
    want_good, want_bad = records(plain)
    assert [(r.key, r.location, r.text) for r in good] == [(r.key, r.location, r.text) for r in want_good]
    assert [(b.location, b.reason) for b in bad] == [(b.location, b.reason) for b in want_bad] == [("3", "invalid_json")]


def test_declared_format_applies_to_members_and_corrupt_streams_are_rejected(tmp_path: Path):
    data = tmp_path / "export.data.gz"
    data.write_bytes(gzip.compress(jsonl_bytes([{"id": 1, "text": "declared jsonl"}])))
    good, _ = records(data, ReadOptions(member_format="jsonl"))
    assert [r.text for r in good] == ["declared jsonl"]
    corrupt = tmp_path / "cut.jsonl.gz"
    corrupt.write_bytes(gzip.compress(jsonl_bytes(LINES) * 50)[:40])
    with pytest.raises(FileRejected) as err:
        records(corrupt)
    assert err.value.reason == "corrupt_archive"


def test_tar_members_links_refused_and_zstd_tar(tmp_path: Path):
    def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))

    for suffix, mode in ((".tar.gz", "w:gz"), (".tar", "w")):
        path = tmp_path / f"crawl{suffix}"
        with tarfile.open(path, mode) as tf:
            add(tf, "a/one.txt", b"first document")
            link = tarfile.TarInfo("a/passwd.txt")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(link)
            add(tf, "b/two.csv", b"id,text\n1,second document\n")
        good, bad = records(path)
        assert [(r.location, r.text) for r in good] == [("!a/one.txt", "first document"), ("!b/two.csv:row 1", "second document")]
        assert [(b.location, b.reason) for b in bad] == [("!a/passwd.txt", "unsafe_member")]
    zst = tmp_path / "crawl.tar.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress((tmp_path / "crawl.tar").read_bytes()))
    assert detect_format(zst) == "tar"
    good, bad = records(zst)
    assert len(good) == 2 and len(bad) == 1


def test_archive_bomb_limits(tmp_path: Path):
    bomb = tmp_path / "bomb.txt.gz"
    bomb.write_bytes(gzip.compress(b"A" * (8 << 20)))  # 8 MiB of one letter: about 1000x
    with pytest.raises(FileRejected) as err:
        records(bomb)
    assert err.value.reason == "archive_ratio" and "archive_max_ratio 200x" in err.value.detail
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as z:
        for i in range(5):
            z.writestr(f"m{i}.txt", f"member {i} " * 60)
    with pytest.raises(FileRejected) as err:
        records(many, ReadOptions(archive_max_members=4))
    assert err.value.reason == "too_many_members" and "5 members > archive_max_members 4" in err.value.detail
    good, bad = records(many, ReadOptions(archive_max_bytes=1000))  # 600 bytes each: only one fits
    assert len(good) == 1 and [(b.location, b.reason) for b in bad] == [(f"!m{i}.txt", "archive_too_large") for i in range(1, 5)]
    bomb_zip = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb_zip, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ok.txt", "a normal member")
        z.writestr("zeros.txt", b"\x00" * (8 << 20))
    good, bad = records(bomb_zip)
    assert [r.text for r in good] == ["a normal member"] and [(b.location, b.reason) for b in bad] == [("!zeros.txt", "archive_ratio")]
