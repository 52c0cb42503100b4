"""WARC web crawls written with warcio: HTML responses become documents located by URL; error responses,
other content types and revisits are bad records naming the URL; requests and warcinfo are not records."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from vertical_dag.sources import FileRejected, detect_format

from .test_sources_pdf import records

PAGE = ("<html lang='en'><head><title>Court news</title></head><body><nav>Home | About</nav>"
        "<article><h1>Ruling on appeal</h1><p>The appeal was dismissed with costs.</p></article>"
        "<footer>Copyright</footer></body></html>")


def _response(writer: WARCWriter, url: str, status: str, content_type: str, body: bytes) -> None:
    headers = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.1")
    writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=headers))


def make_warc(path: Path, gzip: bool) -> Path:
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=gzip)
        w.write_record(w.create_warcinfo_record(path.name, {"software": "test"}))
        req = StatusAndHeaders("GET /news HTTP/1.1", [("Host", "example.org")], is_http_request=True)
        w.write_record(w.create_warc_record("https://example.org/news", "request", payload=io.BytesIO(b""), http_headers=req))
        _response(w, "https://example.org/news", "200 OK", "text/html; charset=utf-8", PAGE.encode())
        _response(w, "https://example.cn/fagui", "200 OK", "text/html; charset=gbk",
                  "<html><body><p>中华人民共和国民法典</p><p>第一条 为了保护民事主体的合法权益。</p></body></html>".encode("gbk"))
        _response(w, "https://example.org/missing", "404 Not Found", "text/html", b"<p>not found</p>")
        _response(w, "https://example.org/logo.png", "200 OK", "image/png", b"\x89PNG\r\n\x1a\n....")
        _response(w, "https://example.org/robots.txt", "200 OK", "text/plain", b"User-agent: *\nDisallow:")
        _response(w, "https://example.org/news", "200 OK", "text/html", PAGE.encode())  # fetched twice
    return path


@pytest.mark.parametrize("gzip", [True, False])
def test_warc_pages_errors_and_other_types(tmp_path: Path, gzip: bool):
    path = make_warc(tmp_path / ("crawl.warc.gz" if gzip else "crawl.warc"), gzip)
    assert detect_format(path) == "warc"
    good, bad = records(path)
    assert [(r.uri, r.location) for r in good] == [
        ("https://example.org/news", "record 3"), ("https://example.cn/fagui", "record 4"),
        ("https://example.org/robots.txt", "record 7"), ("https://example.org/news", "record 8")]
    news, cn = good[0], good[1]
    assert news.text == "Ruling on appeal\nThe appeal was dismissed with costs." and news.key == "https://example.org/news"
    assert (news.meta["title"], news.meta["http_status"], news.meta["encoding"]) == ("Court news", 200, "utf-8")
    assert cn.text == "中华人民共和国民法典\n第一条 为了保护民事主体的合法权益。" and cn.meta["encoding"] == "gbk"
    assert [(b.location, b.reason) for b in bad] == [("record 5", "http_error"), ("record 6", "not_html")]
    assert bad[0].detail == "https://example.org/missing: HTTP 404" and "image/png" in bad[1].detail
    assert good[3].key == news.key  # a second capture of a URL: ingest quarantines it as a duplicate_id


def test_truncated_warc_keeps_what_came_before(tmp_path: Path):
    path = make_warc(tmp_path / "crawl.warc", gzip=False)
    data = path.read_bytes()
    cut = tmp_path / "cut.warc"
    cut.write_bytes(data[: data.index(b"https://example.org/missing") + 200])
    good, bad = records(cut)
    assert [r.uri for r in good] == ["https://example.org/news", "https://example.cn/fagui"]
    assert [(b.location, b.reason) for b in bad][-1] == ("record 5", "corrupt_warc")
    junk = tmp_path / "junk.warc"
    junk.write_bytes(b"not a warc at all\n" * 10)
    with pytest.raises(FileRejected) as err:
        records(junk)
    assert err.value.reason == "invalid_warc"
