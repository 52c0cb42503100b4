"""One run of a stage at a time per project: an advisory lock held for the whole run.

The lock file lives in data/.locks/ (outside every DVC output, so it never changes a stage's hash). A second
run of the same stage fails at once, naming who holds the lock, and touches nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..project import Project


class StageLocked(RuntimeError):
    pass


@contextmanager
def stage_lock(project: Project, stage: str) -> Iterator[None]:
    folder = project.data / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stage}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            try:
                info = json.loads(holder)
                who = f"pid {info['pid']} on {info['host']} since {info['since']}"
            except (ValueError, KeyError):
                who = "another process"
            raise StageLocked(f"stage {stage} is already running ({who}); wait for it to finish "
                              f"(lock: {project.rel(path)})") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
