"""What a gate reads from each of a stage's files, kept in the gate's process and read while the stage works.

A part stage's gate reads one small file per part and kind (the profile sidecar, the ledger's actions, the
footer): some 2,000 files at 100x the example, about a second after the stage ends. The gate process
(gate_process.py) is idle while the stage works, so it sweeps the stage's folders (`prefetch`) and reads
each file once it is in place; when the gate runs, only what changed since is read again. A result is
reused only while every file it came from has the size, mtime and inode it had when it was read (outputs
are put in place by renaming a new file, so a rewritten file is a new inode); anything else is read anew.
Outside the gate process (`enable` not called) nothing is kept: a long-lived process that runs stages, such
as a test session or a Dagster code server, does not accumulate tables.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_memo: dict[tuple[Hashable, ...], tuple[tuple[int, ...], Any]] = {}
_lock = threading.Lock()
_enabled = False


def enable() -> None:
    """Keep results in this process from now on (the gate process calls this when it starts)."""
    global _enabled
    _enabled = True


def _stat(paths: tuple[Path, ...]) -> tuple[int, ...]:
    out: list[int] = []
    for p in paths:
        st = os.stat(p)
        out += (st.st_size, st.st_mtime_ns, st.st_ino)
    return tuple(out)


def cached(kind: Hashable, read: Callable[[], T], *paths: Path) -> T:
    """read(), which depends only on the files `paths` (and on `kind`, which names what is read and how:
    include its settings), or its earlier result while those files are unchanged."""
    if not _enabled:
        return read()
    key = (kind, *map(str, paths))
    try:
        before = _stat(paths)
    except OSError:  # a missing file: read() says what that means
        return read()
    with _lock:
        hit = _memo.get(key)
    if hit is not None and hit[0] == before:
        return hit[1]
    value = read()
    try:
        if _stat(paths) == before:  # not replaced while it was read
            with _lock:
                _memo[key] = (before, value)
    except OSError:
        pass
    return value


def clear() -> None:
    with _lock:
        _memo.clear()


class Prefetch:
    """Calls `sweep` every `interval` seconds on a thread until `stop`: sweep makes the gate's own reads
    through `cached`, so what it found is what the gate then reuses. After each sweep it waits at least
    IDLE_FACTOR times that sweep's length, so it never takes more than a few percent of a core from the stage:
    at 100x the example, a sweep of dedup's 2,100 files costs 0.13 s of CPU even when it reads none of them
    again (their stats, and a thread pool's bookkeeping), and sweeps a second apart took a tenth of a core.
    The wait stops at MAX_WAIT seconds: a long sweep is one that read much, which the gate needs."""

    IDLE_FACTOR = 20
    MAX_WAIT = 10.0

    def __init__(self, sweep: Callable[[], Any], interval: float = 1.0) -> None:
        self._sweep, self._interval = sweep, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gate-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                self._sweep()
            except Exception:  # noqa: BLE001 - half-written folders, a stage that failed: the gate reads it all again
                pass
            took = time.perf_counter() - started
            self._stop.wait(min(max(self._interval, self.IDLE_FACTOR * took), self.MAX_WAIT))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
