"""The gate process's memo of per-file reads: reused only while the files are the ones read, nothing kept
outside the gate process, and the sweep that fills it stops when asked."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from vertical_dag.quality import file_memo
from vertical_dag.records import write_text


@pytest.fixture
def reads() -> list[str]:
    return []


def reader(path: Path, reads: list[str]):
    def read() -> str | None:
        reads.append(path.name)
        return path.read_text() if path.exists() else None
    return read


def test_nothing_is_kept_outside_the_gate_process(tmp_path: Path, reads: list[str]) -> None:
    f = tmp_path / "a.txt"
    write_text("one", f)
    assert [file_memo.cached("k", reader(f, reads), f) for _ in range(2)] == ["one", "one"]
    assert reads == ["a.txt", "a.txt"]


def test_a_result_is_reused_only_while_its_files_are_unchanged(tmp_path: Path, reads: list[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_memo, "_enabled", True)
    f, dep = tmp_path / "a.txt", tmp_path / "dep.txt"
    write_text("one", f)
    write_text("x", dep)
    try:
        assert file_memo.cached("k", reader(f, reads), f, dep) == "one"
        assert file_memo.cached("k", reader(f, reads), f, dep) == "one" and reads == ["a.txt"]
        assert file_memo.cached("other kind", reader(f, reads), f, dep) == "one" and len(reads) == 2
        write_text("two", f)  # put in place by a rename, as every output is
        assert file_memo.cached("k", reader(f, reads), f, dep) == "two" and len(reads) == 3
        write_text("y", dep)  # a file it depends on changed: read again
        assert file_memo.cached("k", reader(f, reads), f, dep) == "two" and len(reads) == 4
        f.unlink()  # missing: never served from the memo
        assert file_memo.cached("k", reader(f, reads), f, dep) is None and len(reads) == 5
    finally:
        file_memo.clear()


def test_the_prefetch_sweeps_until_stopped() -> None:
    swept = threading.Event()
    calls: list[int] = []

    def sweep() -> None:
        calls.append(1)
        swept.set()
        if len(calls) == 2:
            raise OSError("a folder half written")  # a failed sweep does not end the sweeping

    prefetch = file_memo.Prefetch(sweep, interval=0.01)
    assert swept.wait(5)
    while len(calls) < 3:
        swept.wait(0.01)
    prefetch.stop()
    n = len(calls)
    threading.Event().wait(0.05)
    assert len(calls) == n  # stopped means stopped
