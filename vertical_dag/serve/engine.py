"""The model's one worker: a queue of requests, decoded in micro-batches on a single thread.

Requests wait in a FIFO queue; the worker takes the first, waits `batch_wait_s` for others (up to
`max_batch_size`) and decodes them together, each row with its own prompt and settings (see
modeling/decode.py), so answers never mix. A request whose client went away is skipped while queued,
and dropped from its batch at the next token when running. Events go back to the caller through its
`emit` callback (thread-safe on the caller's side): ("token", ids so far), ("done", ids, finish reason)
or ("error", message).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..modeling.decode import Row, decode
from ..modeling.generate import GenerationSettings, stop_token_ids

log = logging.getLogger("vertical_dag.serve")
Event = tuple[Any, ...]


class QueueFull(RuntimeError):
    pass


@dataclass
class Job:
    ids: list[int]
    settings: GenerationSettings
    emit: Callable[[Event], None]
    stream: bool = False  # send ("token", ...) events
    cancelled: threading.Event = field(default_factory=threading.Event)
    new_tokens: int = 0  # filled when it ends (tests and logs read it)

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class EngineStats:
    batches: int = 0
    requests: int = 0
    cancelled: int = 0
    largest_batch: int = 0
    running: int = 0
    busy_seconds: float = 0.0


class Engine:
    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 8, batch_wait_s: float = 0.005,
                 max_queue: int = 64):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_s
        self.stop_ids = stop_token_ids(tokenizer)
        self.stats = EngineStats()
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._loop, name="vertical-dag-engine", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def submit(self, job: Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} requests are already waiting; try again shortly") from None

    def close(self, timeout: float = 10.0) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def _take_batch(self, first: Job) -> list[Job]:
        batch = [first]
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.max_batch_size:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # closing: finish this batch, then stop
                break
            batch.append(job)
        live = [j for j in batch if not j.cancelled.is_set()]
        self.stats.cancelled += len(batch) - len(live)
        return live

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._take_batch(first)
            if batch:
                self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        def on_token(job: Job) -> Callable[[list[int]], bool]:
            def keep_going(new: list[int]) -> bool:
                if job.cancelled.is_set():
                    return False
                if job.stream:
                    job.emit(("token", list(new)))
                return True

            return keep_going

        rows = [Row(ids=j.ids, settings=j.settings, on_token=on_token(j)) for j in batch]
        started = time.perf_counter()
        self.stats.running = len(batch)
        try:
            decode(self.model, self.tokenizer, rows, self.stop_ids)
        except Exception as exc:  # one bad batch must not take the server down
            log.exception("decoding failed for a batch of %d", len(batch))
            for j in batch:
                j.emit(("error", f"generation failed: {type(exc).__name__}: {exc}"))
            return
        finally:
            self.stats.running = 0
            self.stats.busy_seconds += time.perf_counter() - started
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for j, r in zip(batch, rows, strict=True):
            j.new_tokens = len(r.new)
            if r.finish == "cancelled":
                self.stats.cancelled += 1
            j.emit(("done", r.new, r.finish))
