"""Where per-part work runs: in this process, on a pool of local processes, or as Ray tasks.

Every executor has one method, `map(fn, items, window)`, which yields fn(item) in the order of `items`
whatever order the work finishes in, so a stage that writes or folds the results in that order produces
the same outputs bit for bit with 1 worker, N workers or a Ray cluster. At most `window` items are in flight
(default 2 per worker, for results that are large); a caller whose results are small (a part's counts: the
part itself is on disk) passes a larger one, so a worker is not left idle behind one long item. `fn` and the items must be picklable (a
module-level function, or a functools.partial of one with plain data).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    workers: int

    def map(self, fn: Callable[[T], R], items: Iterable[T], window: int | None = None) -> Iterator[R]: ...

    def close(self) -> None: ...


class InProcess:
    workers = 1

    def map(self, fn: Callable[[T], R], items: Iterable[T], window: int | None = None) -> Iterator[R]:
        return (fn(x) for x in items)

    def close(self) -> None:
        pass


class LocalPool:
    """A pool of `workers` processes (spawned: no inherited locks or threads), started on first use and kept
    for every later map() until close(); at most `window` items in flight, so memory stays bounded however
    many parts there are. Workers run at lower CPU priority (WORKER_NICE) than the stage's process."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn: Callable[[T], R], items: Iterable[T], window: int | None = None) -> Iterator[R]:
        import multiprocessing as mp

        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_start_worker, initargs=(os.getpid(),))
        pending: deque[Future] = deque()
        for item in items:
            pending.append(self._pool.submit(fn, item))
            if len(pending) >= (window or 2 * self.workers):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class RayTasks:
    """The same work as Ray tasks on a cluster (`address`: a cluster, "auto" for a running one, None to
    start a local one). Data must sit where every node can read it (see the README on clusters): `shared`,
    the folder the tasks read and write, is checked on every node before any work (nodes_not_seeing)."""

    def __init__(self, address: str | None, workers: int | None = None, shared: Path | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise RuntimeError("execution.backend is ray but ray is not installed: "
                               "pip install 'vertical_dag[ray]'") from None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": address} if address else {"num_cpus": workers}
            ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
        self._ray = ray
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        blind = nodes_not_seeing(shared) if shared is not None else []
        if blind:
            raise NotSharedError(f"execution.backend ray: {len(blind)} node(s) of the cluster at "
                                 f"{address or 'a local cluster'} cannot work on {shared} as this process sees it: "
                                 f"{'; '.join(blind)}. Every node needs vertical_dag installed and the project's data "
                                 "folder on a filesystem they all see at the same path (README: clusters); no work "
                                 "was started.")

    def map(self, fn: Callable[[T], R], items: Iterable[T], window: int | None = None) -> Iterator[R]:
        remote = self._ray.remote(_apply)  # Ray wraps functions, not callable objects: fn travels as data
        fn_ref = self._ray.put(fn)
        pending: deque[Any] = deque()
        for item in items:
            pending.append(remote.remote(fn_ref, item))
            if len(pending) >= (window or 2 * self.workers):
                yield self._ray.get(pending.popleft())
        while pending:
            yield self._ray.get(pending.popleft())

    def close(self) -> None:
        pass  # the cluster outlives the stage


class NotSharedError(RuntimeError):
    """A Ray cluster's node cannot work on the stage's data folder: it sees another folder (or none) at that
    path, so its tasks would read other inputs and write outputs this process never sees, or it cannot run
    the stage's tasks at all."""


PROBE_SECONDS = 120  # a node's first task starts a worker process there: seconds on a busy node


def nodes_not_seeing(folder: Path) -> list[str]:
    """The alive Ray nodes with CPUs on which `folder` is not this process's `folder`, each as "node ID at
    address: what it saw". A probe file with a random token is written here and read on every node by a
    task pinned there, so a node that mounts another folder (or none) at that path is found before any work,
    and so is one that cannot run the stage's tasks at all (vertical_dag not installed there, no answer)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    probe = folder / f".node-probe-{token}"
    probe.write_text(token)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
        read = ray.remote(num_cpus=0)(_read_probe)
        refs = [read.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(probe)) for n in nodes]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=PROBE_SECONDS)
        seen = [_answer(ray, ref) if ref in ready else f"no answer in {PROBE_SECONDS} s" for ref in refs]
    finally:
        probe.unlink(missing_ok=True)
    return [f"node {n['NodeID'][:12]} at {n.get('NodeManagerAddress', '?')}: {what}"
            for n, what in zip(nodes, seen, strict=True) if what != token]


def _answer(ray: Any, ref: Any) -> str:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:  # the task could not run there: its last line is the exception
        return f"its task failed: {str(e).strip().splitlines()[-1][:300]}"


def _read_probe(path: str) -> str:
    """What a node finds at the probe's path: its token, or why not."""
    p = Path(path)
    if not p.parent.is_dir():
        return f"no folder {p.parent}"
    try:
        return p.read_text()
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"


WORKER_NICE = 10
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """End this helper process when the stage's process `parent` ends, killed included: a killed stage runs
    no cleanup, and its pool's processes would otherwise wait on their queue for ever (Linux: the parent-death
    signal; elsewhere nothing). The signal comes when the thread that started this process ends: pools start
    their processes from the stage's main thread."""
    if sys.platform != "linux":
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it ended before the signal was asked for
        os._exit(1)


def _start_worker(parent: int) -> None:
    """Workers end with the stage (die_with_parent) and yield the CPU to it: its in-order decisions and
    writes are the critical path, and with as many workers as cores it would otherwise get a share of a
    core, not a core."""
    die_with_parent(parent)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), WORKER_NICE))
    except (AttributeError, OSError):
        pass


def _apply(fn: Callable[[T], R], item: T) -> R:
    return fn(item)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# With workers: auto, less work than this stays in-process: starting a pool of fresh interpreters costs about
# a second, more than a few MB of text take to process.
MIN_POOL_BYTES = 16 << 20


def make_executor(execution: Any, n_items: int | None = None, work_bytes: int | None = None,
                  shared: Path | None = None) -> Executor:
    """The executor params.execution asks for; one item, one core, or (auto) little work stays in-process.
    shared: the folder a stage's tasks read and write (the project's data/), which every Ray node must see."""
    if execution.backend == "ray":
        return RayTasks(execution.ray_address, None if execution.workers == "auto" else execution.workers, shared)
    auto = execution.workers == "auto"
    workers = cpu_count() if auto else int(execution.workers)
    if n_items is not None:
        workers = min(workers, n_items)
    if auto and work_bytes is not None and work_bytes < MIN_POOL_BYTES:
        workers = 1
    return InProcess() if workers <= 1 else LocalPool(workers)
