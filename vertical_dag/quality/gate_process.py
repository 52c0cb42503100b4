"""The process a stage's quality gate runs in: started with the stage, it imports Great Expectations while the
stage works and validates the outputs once the stage is done.

Importing GE is seconds of Python. On a thread of the stage's own process it holds that process's GIL, and
the stage's main thread is the critical path whenever workers do the rest (dedup's and split's in-order
decisions): measured at 10x the example with 2 workers, dedup took 2.3 s longer with the import on a thread
than without it. In a process of its own it takes its share of a core from the workers, which run at lower
priority, and the gate still starts with GE loaded. Meanwhile it reads the per-part files the gate will
read (profile sidecars, ledger actions, row counts) as the stage puts them in place, and keeps them while
they are unchanged (file_memo.py), so the gate reads again only what changed. If the process cannot start
or dies, the gate runs in the stage's process, so a gate always runs.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..stages.executor import die_with_parent
from . import file_memo
from .gate import GateResult, read_files, validate_stage
from .validate import import_gx

log = logging.getLogger("vertical_dag.quality")
PREFETCH_SECONDS = 1.0  # between sweeps of the stage's folders: a sweep of 700 parts stats some 2,000 files

_prefetch: list[file_memo.Prefetch] = []  # in the gate process: the sweep running while the stage works


def _start(parent: int) -> None:
    die_with_parent(parent)
    file_memo.enable()
    import_gx()


def _start_prefetch(stage: str, project: Any, params: Any) -> None:
    _prefetch.append(file_memo.Prefetch(lambda: read_files(stage, project, params), PREFETCH_SECONDS))


def _validate(stage: str, project: Any, params: Any, metrics: dict[str, Any]) -> GateResult:
    while _prefetch:
        _prefetch.pop().stop()
    return validate_stage(stage, project, params, metrics)


class GateProcess:
    """One spawned process, importing GE from the start and reading the stage's files as they are written
    (when given the stage), that runs `validate_stage` when asked."""

    def __init__(self, stage: str | None = None, project: Any = None, params: Any = None) -> None:
        import multiprocessing as mp

        try:
            self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"),
                                                                         initializer=_start,
                                                                         initargs=(os.getpid(),))
            # start the process (and its import) now, not when the gate is due
            self._pool.submit(_start_prefetch, stage, project, params) if stage else self._pool.submit(int)
        except (OSError, RuntimeError) as exc:
            log.warning("gate process could not start (%s): the gate runs in the stage's process", exc)
            self._pool = None

    def validate(self, stage: str, project: Any, params: Any, metrics: dict[str, Any]) -> GateResult:
        if self._pool is not None:
            try:
                return self._pool.submit(_validate, stage, project, params, metrics).result()
            except BrokenProcessPool as exc:  # the process died (killed, out of memory): validate here instead
                log.warning("gate process failed (%s: %s): the gate runs in the stage's process",
                            type(exc).__name__, exc)
        return validate_stage(stage, project, params, metrics)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
