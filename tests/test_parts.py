"""The part-stage core's bookkeeping: what a run records about each input it processed."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from vertical_dag.records import file_sha256
from vertical_dag.stages.parts import PartResult, PartStore, Unit, _fingerprint_of_planned


def file_sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_new_inputs_are_hashed_while_the_stage_works_and_a_file_changed_meanwhile_is_read_again(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    units = []
    original_b = file_sha256_of(b"b" * 100_000)
    for name in ("a", "b", "c"):
        (raw / f"{name}.txt").write_bytes(name.encode() * 100_000)
        units.append(Unit(name, raw / f"{name}.txt", name))
    log = logging.getLogger("test-parts")
    store = PartStore(tmp_path / "out", "s1", log)
    plan = store.plan(units)
    assert [u.key for u in plan.todo] == ["a", "b", "c"] and plan.new == 3
    (raw / "b.txt").write_bytes(b"edited after the plan")  # the run may have read either version
    os.utime(raw / "b.txt", ns=(1, 1))
    for u in units:
        store.parts_dir.mkdir(parents=True, exist_ok=True)
        store.part_path(u.part).write_bytes(b"part")
        store.commit(u, PartResult())
    store.close()
    store.save()
    recorded = {k: e["fingerprint"]["sha256"] for k, e in store.units.items()}
    assert recorded["a"] == file_sha256(raw / "a.txt") and recorded["c"] == file_sha256(raw / "c.txt")
    # hashed before the edit: the old bytes' hash (the edit's new mtime makes the next run look again);
    # hashed after it: no hash, as the file is no longer the planned one
    assert recorded["b"] in (None, original_b)

    again = PartStore(tmp_path / "out", "s1", log).plan(units)
    assert [u.key for u in again.todo] == ["b"] and sorted(again.unchanged) == ["a", "c"]


def test_a_file_that_is_not_the_planned_one_gets_no_hash(tmp_path: Path):
    path = tmp_path / "f.txt"
    path.write_text("some text")
    st = path.stat()
    assert _fingerprint_of_planned(path, (st.st_size, st.st_mtime_ns))["sha256"] == file_sha256(path)
    assert _fingerprint_of_planned(path, (st.st_size + 1, st.st_mtime_ns))["sha256"] is None
    assert _fingerprint_of_planned(tmp_path / "gone.txt", (1, 1))["sha256"] is None
