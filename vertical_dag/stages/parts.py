"""The part-stage core: incremental state, fingerprints, atomic part + ledger writes, per-reason counts.

A data stage maps *units* (a raw file, or an upstream part) to output parts of the same name in
<out>/parts/ and ledger parts in <out>/ledger/. The core decides what to do (new and changed units; removed
ones lose their parts; changed settings rebuild everything), hands the per-unit work to an executor (in
this process, a local pool, or Ray: stages/executor.py) and records each finished unit in <out>/state.json.

Faults: a unit whose work fails (a full disk, an unreadable file) is *not* recorded, so the next run redoes
it; the stage then fails naming every such unit, after the others were kept. Stale temporaries of an
interrupted run are removed at start, so they never end up inside a DVC output.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

from ..quality.part_profile import FOLDER as PROFILE_FOLDER
from ..records import file_fingerprint, read_json, read_many, write_json
from .executor import Executor, InProcess
from .metrics import ReasonCounts, contract_counts

STATE = "state.json"
PARTS_IN_FLIGHT = 16  # per worker


class PartsFailed(RuntimeError):
    """Some units failed; they are not recorded as done, so the next run redoes them."""


@dataclass(frozen=True)
class Unit:
    key: str  # stable name of the input: a raw file relative to data/raw, or an upstream part's name
    path: Path  # the input file
    part: str  # stem of its output part and ledger part


@dataclass
class PartResult:
    documents_in: int = 0
    documents_out: int = 0
    dropped: ReasonCounts = field(default_factory=ReasonCounts)
    quarantined: ReasonCounts = field(default_factory=ReasonCounts)
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific numbers kept with the unit
    retry: bool = False  # the input could not be read at all: account for it, but read it again next run

    def to_json(self) -> dict[str, Any]:
        return {"documents_in": self.documents_in, "documents_out": self.documents_out,
                "dropped": self.dropped.to_json(), "quarantined": self.quarantined.to_json(), **self.extra}


@dataclass
class UnitFailed:
    key: str
    message: str


def fingerprint_settings(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"no space left on device ({exc.filename or 'writing an output'}): free space and run again"
    return f"{type(exc).__name__}: {exc}"


def _fingerprint(path: Path, old: dict[str, Any] | None) -> dict[str, Any]:
    """size + mtime + sha256; an input that cannot be read gets no hash, so it is read again next run."""
    try:
        return file_fingerprint(path, old)
    except OSError:
        st = path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": None}


def _fingerprint_of_planned(path: Path, planned: tuple[int, int]) -> dict[str, Any]:
    """_fingerprint of a new input hashed while the stage works: when it is no longer the file that was
    planned (size, mtime), the stage may have read either version, so it gets no hash (read again next run)."""
    try:
        fp = _fingerprint(path, None)
    except OSError:  # gone since: the stage's read of it says what happened
        return {"size": planned[0], "mtime_ns": planned[1], "sha256": None}
    if (fp["size"], fp["mtime_ns"]) != planned:
        fp["sha256"] = None
    return fp


def _safe(work: Callable[[Any], PartResult], unit: Any) -> PartResult | UnitFailed:
    try:
        return work(unit)
    except Exception as exc:  # one unit's failure must not cost the others
        traceback.print_exc(file=sys.stderr)
        return UnitFailed(unit.key, describe_error(exc))


class _Bound:
    """work wrapped so failures come back as values (picklable for process pools)."""

    def __init__(self, work: Callable[[Any], PartResult]) -> None:
        self.work = work

    def __call__(self, unit: Any) -> PartResult | UnitFailed:
        return _safe(self.work, unit)


class _Merge:
    """merge bound to one unit's pieces and results (a loop's variables, bound for good)."""

    def __init__(self, merge: Callable[[Unit, list[Any], list[PartResult]], PartResult], done: list[Any]) -> None:
        self.merge, self.done = merge, done

    def __call__(self, unit: Unit) -> PartResult:
        return self.merge(unit, [piece for (_, piece), _ in self.done], [r for _, r in self.done])


@dataclass
class Plan:
    todo: list[Unit]
    unchanged: list[str]
    removed: list[str]
    rebuild: str | None  # why everything is redone, or None
    new: int = 0


class PartStore:
    """The output folder of a part stage and its state.json: {version, settings, units: {key: entry}}."""

    def __init__(self, out: Path, settings: str, log: Any, version: int = 1) -> None:
        self.out, self.settings, self.log, self.version = out, settings, log, version
        self.parts_dir, self.ledger_dir = out / "parts", out / "ledger"
        self.profile_dir = out / PROFILE_FOLDER  # the gate's per-part sidecars (quality/part_profile.py)
        self.state = read_json(out / STATE, None) or {}
        self.units: dict[str, dict[str, Any]] = dict(self.state.get("units", {}))
        # computed by plan(), or still being computed (Futures: new inputs), recorded by commit()
        self._fingerprints: dict[str, dict[str, Any] | Future] = {}
        self._saved = time.perf_counter()
        self._hasher: ThreadPoolExecutor | None = None
        self._to_hash: list[tuple[str, Path, tuple[int, int]]] = []  # new inputs planned: (key, path, size/mtime)

    def part_path(self, part: str) -> Path:
        return self.parts_dir / f"{part}.parquet"

    def ledger_path(self, part: str) -> Path:
        return self.ledger_dir / f"{part}.parquet"

    def profile_path(self, part: str) -> Path:
        return self.profile_dir / f"{part}.parquet"

    def plan(self, units: Iterable[Unit], *, order_dependent: bool = False) -> Plan:
        """What to do. order_dependent: a changed or removed earlier unit invalidates every later decision
        (dedup), so it rebuilds everything instead of redoing one unit."""
        units = list(units)
        previous = set(self.units)
        rebuild = None
        if self.units and (self.state.get("settings") != self.settings or self.state.get("version") != self.version):
            rebuild = "settings changed"
        current = {u.key for u in units}
        removed = sorted(k for k in self.units if k not in current)
        todo, unchanged, changed = [], [], []
        olds = [None if rebuild else self.units.get(u.key) for u in units]
        # inputs seen before are hashed now (on threads: hashlib releases the GIL), as the plan compares them;
        # new ones only need their hash recorded, so it is computed on a thread while the stage works (at 100x,
        # 2 GB of new parts cost each stage 2.7 s on both cores before any work started): start_hashing
        seen = [k for k in range(len(units)) if olds[k]]
        fingerprints: list[dict[str, Any] | None] = [None] * len(units)
        for k, fp in zip(seen, read_many(lambda k: _fingerprint(units[k].path, olds[k]["fingerprint"]), seen), strict=True):
            fingerprints[k] = fp
        for u, old, fp in zip(units, olds, fingerprints, strict=True):
            if fp is None:
                try:
                    st = u.path.stat()
                    planned = (st.st_size, st.st_mtime_ns)
                except OSError:
                    planned = (-1, -1)  # no hash recorded: the stage reports what reading it found
                self._to_hash.append((u.key, u.path, planned))
                todo.append(u)
                continue
            self._fingerprints[u.key] = fp
            if fp["sha256"] and old["fingerprint"].get("sha256") == fp["sha256"] and self.part_path(old["part"]).exists():
                old["fingerprint"] = fp  # same bytes, maybe a new mtime: remembered, so not re-hashed
                unchanged.append(u.key)
            else:
                todo.append(u)
                if old:
                    changed.append(u.key)
        if order_dependent and not rebuild and (changed or removed):
            rebuild = f"input part {(changed or removed)[0]} {'changed' if changed else 'vanished'}"
            todo, unchanged = units, []
        if rebuild:
            self.log.warning("%s: rebuilding from scratch: %s", self.out.name, rebuild)
            self.reset()
        for key in removed if not rebuild else []:
            self.forget(key)
        new = sum(1 for u in todo if u.key not in previous)
        return Plan(todo, unchanged, removed, rebuild, new)

    def start_hashing(self) -> None:
        """Hash the new inputs the plan found, on a thread, in plan order. run_units calls this as the work
        starts, so a stage that fails between plan and run_units (a Ray cluster refused, say) leaves no
        hashing behind it that its process would wait for before exiting."""
        for key, path, planned in self._to_hash:
            self._fingerprints[key] = self._hashing().submit(_fingerprint_of_planned, path, planned)
        self._to_hash = []

    def _hashing(self) -> ThreadPoolExecutor:
        if self._hasher is None:
            self._hasher = ThreadPoolExecutor(1, thread_name_prefix="part-hash")  # in plan order: commit's order
        return self._hasher

    def close(self) -> None:
        """Stop hashing inputs that will not be committed (a failed or interrupted run)."""
        if self._hasher is not None:
            self._hasher.shutdown(wait=True, cancel_futures=True)
            self._hasher = None
        self._to_hash = []

    def reset(self) -> None:
        for folder in (self.parts_dir, self.ledger_dir, self.profile_dir):
            shutil.rmtree(folder, ignore_errors=True)
        self.units = {}

    def forget(self, key: str) -> None:
        entry = self.units.pop(key)
        self.part_path(entry["part"]).unlink(missing_ok=True)
        self.ledger_path(entry["part"]).unlink(missing_ok=True)
        self.profile_path(entry["part"]).unlink(missing_ok=True)
        self.log.info("%s: input %s is gone: its part, ledger rows and profile are removed", self.out.name, key)

    def commit(self, unit: Unit, result: PartResult, *, force: bool = False) -> None:
        self.start_hashing()  # committed without run_units: what the plan found is hashed from now
        fp = self._fingerprints.get(unit.key) or _fingerprint(unit.path, None)
        fp = dict(fp.result() if isinstance(fp, Future) else fp)
        if result.retry:
            fp["sha256"] = None  # never equal to a real hash: the unit is read again next run
        seq = self.units.get(unit.key, {}).get("seq", len(self.units))
        self.units[unit.key] = {"part": unit.part, "seq": seq, "fingerprint": fp, **result.to_json()}
        if force or time.perf_counter() - self._saved > 5:  # a crash loses at most a few seconds of work
            self.save()

    def save(self) -> None:
        """state.json: the core's keys plus whatever a stage keeps there (e.g. ingest's arrival numbers)."""
        own = {k: v for k, v in self.state.items() if k not in ("version", "settings", "units")}
        # compact: a sequential stage rewrites it after every part (indented, json's pure-Python encoder
        # made that quadratic cost 3.5 s of dedup at 30x)
        write_json({**own, "version": self.version, "settings": self.settings, "units": self.units}, self.out / STATE,
                   indent=None)
        self._saved = time.perf_counter()

    def ordered(self) -> list[str]:
        return sorted(self.units, key=lambda k: self.units[k]["seq"])

    def totals(self) -> dict[str, Any]:
        """The data-contract counts over every unit recorded so far."""
        dropped, quarantined = ReasonCounts(), ReasonCounts()
        n_in = n_out = 0
        for e in self.units.values():
            n_in += e["documents_in"]
            n_out += e["documents_out"]
            dropped.merge(e["dropped"])
            quarantined.merge(e["quarantined"])
        return contract_counts(n_in, n_out, dropped, quarantined)


def run_units(store: PartStore, todo: list[Unit], work: Callable[[Any], PartResult],
              executor: Executor | None = None, *, progress: Callable[[Unit, PartResult], None] | None = None,
              sequential: bool = False, pieces: Callable[[Unit], list[Any]] | None = None,
              merge: Callable[[Unit, list[Any], list[PartResult]], PartResult] | None = None) -> list[UnitFailed]:
    """Do every unit (results in order, whatever executes them), record each finished one; failures are
    returned, and the caller raises PartsFailed once the stage's bookkeeping is written.

    sequential: each unit builds on the ones before (dedup's index): state is saved after every unit and
    the first failure stops the run, since later decisions would miss the failed unit.
    pieces / merge: a large unit is cut into pieces (each with a `key`) that run on different workers, and
    merge(unit, pieces, results) joins their outputs into the unit's part, in piece order."""
    executor = executor or InProcess()
    store.start_hashing()
    tasks = [(unit, piece) for unit in todo for piece in (pieces(unit) if pieces else [unit])]
    # a unit's result is its counts (its part is on disk): many may wait, so no worker idles behind a long one
    results = executor.map(_Bound(work), [piece for _, piece in tasks], window=PARTS_IN_FLIGHT * executor.workers)
    failed: list[UnitFailed] = []
    try:
        _record_results(store, tasks, results, failed, progress, sequential, merge)
    finally:
        store.close()
    store.save()
    return failed


def _record_results(store: PartStore, tasks: list[tuple[Unit, Any]], results: Iterable[PartResult | UnitFailed],
                    failed: list[UnitFailed], progress: Callable[[Unit, PartResult], None] | None,
                    sequential: bool, merge: Callable[[Unit, list[Any], list[PartResult]], PartResult] | None) -> None:
    for unit, group in groupby(zip(tasks, results, strict=True), key=lambda tr: tr[0][0]):
        done = list(group)
        result = next((r for _, r in done if isinstance(r, UnitFailed)), None)
        if result is None:
            result = done[0][1] if merge is None or len(done) == 1 else _safe(_Merge(merge, done), unit)
        if isinstance(result, UnitFailed):
            store.log.error("%s: %s failed: %s (not recorded; the next run redoes it)", store.out.name,
                            unit.key, result.message)
            failed.append(UnitFailed(unit.key, result.message))
            if sequential:
                break
            continue
        store.commit(unit, result, force=sequential)
        if progress is not None:
            progress(unit, result)


def raise_failures(stage: str, failed: list[UnitFailed]) -> None:
    if failed:
        lines = "; ".join(f"{f.key}: {f.message}" for f in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        raise PartsFailed(f"stage {stage}: {len(failed)} part(s) failed and will be redone on the next run: "
                          f"{lines}{more}")
