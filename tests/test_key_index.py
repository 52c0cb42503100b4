"""The on-disk key index of dedup (text/key_index.py) and the batch band keys it is filled from (text/lsh.py):
hits independent of the segment layout, merges on a thread writing their own segments, and lookups in key
order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vertical_dag.text.key_index import KeyIndex
from vertical_dag.text.lsh import BatchBands


def test_key_index_hits_do_not_depend_on_segments(tmp_path: Path):
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 50, 500).astype(np.uint64)
    one, many = KeyIndex(), KeyIndex()
    one.add(keys, np.arange(500))
    for s in range(0, 500, 37):
        many.add(keys[s : s + 37], np.arange(s, min(s + 37, 500)))
    assert len(many.segments) > 1
    q = np.array([3, 7, 49, 99], dtype=np.uint64)
    for cap in (2, 5, 1000):
        a, b = one.lookup(q, cap), many.lookup(q, cap)
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert (one.lookup(q, 2)[1][:2] == np.flatnonzero(keys == 3)[:2]).all()
    # hash-like keys, saved and reloaded segments, runs of equal keys across fence blocks: every hit found
    keys = rng.integers(0, 2**64, 20_000, dtype=np.uint64)
    keys[5000:5100] = keys[4999]
    q = np.concatenate((keys[::7], rng.integers(0, 2**64, 5000, dtype=np.uint64)))
    want = [(j, d) for j, k in enumerate(q.tolist()) for d in np.flatnonzero(keys == k)[:64].tolist()]
    for background in (False, True):  # merged in place, or on a thread while adding, looking up and saving
        folder, counter = tmp_path / str(background), [0]
        index = KeyIndex(max_merge=4 * 1500, background=background)
        for s in range(0, 20_000, 1500):
            index.add(keys[s : s + 1500], np.arange(s, min(s + 1500, 20_000)))
            qi, di = index.lookup(keys[: s + 1500 : 11], 64)
            assert len(qi) >= len(keys[: s + 1500 : 11])  # every key added so far is found, merged or not
            if s % 3000 == 0:
                index = KeyIndex.load(folder, index.save(folder, "k", counter), background)
        index.wait()
        assert sum(seg.size for seg in index.segments) == 20_000
        assert len(index.segments) == 5  # 14 segments added, merged FAN_IN at a time up to max_merge: 3 + 2
        # after a save, merges on the thread wrote their own segments: the folder holds what the layout lists
        stems = index.save(folder, "k", counter)
        index.remove_unlisted(folder, stems)
        assert {f.name.split(".")[0] for f in folder.glob("*.npy")} == set(stems)
        assert not list(folder.glob(".*.tmp"))
        index = KeyIndex.load(folder, stems, background)
        qi, di = index.lookup(q, 64)
        assert list(zip(qi.tolist(), di.tolist(), strict=True)) == want
        # probed in key order (the caller's argsort): the same hits, by query position
        qi, di = index.lookup(q, 64, np.argsort(q, kind="stable"))
        assert list(zip(qi.tolist(), di.tolist(), strict=True)) == want


def test_merges_on_the_thread_write_their_segments_and_a_reload_finds_every_key(tmp_path: Path):
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 2**64, 12_000, dtype=np.uint64)
    folder, counter = tmp_path / "k", [0]
    index = KeyIndex(background=True)
    index.add(keys[:1000], np.arange(1000))
    first = index.save(folder, "k", counter)  # from here on, a merge on the thread writes its own segment
    for s in range(1000, 12_000, 1000):
        index.add(keys[s : s + 1000], np.arange(s, s + 1000))
    index.wait()
    written = [seg.stem for seg in index.segments if seg.stem is not None and seg.stem not in first]
    assert written and len(index.segments) < 12  # merged, and the merged segments are already on disk
    stems = index.save(folder, "k", counter)
    index.remove_unlisted(folder, stems)
    assert {f.name.split(".")[0] for f in folder.glob("*.npy")} == set(stems)
    assert not list(folder.glob(".*.tmp"))
    q, d = KeyIndex.load(folder, stems).lookup(keys, 1)
    assert (q == np.arange(12_000)).all() and (d == np.arange(12_000)).all()


def test_merging_segments_keeps_equal_keys_oldest_first():
    from vertical_dag.text.key_index import _merge

    rng = np.random.default_rng(3)
    runs, start = [], 0
    for n in (700, 0, 300, 1200):  # an empty segment too; few distinct keys: long runs of equal keys
        keys = np.sort(rng.integers(0, 40, n).astype(np.uint64))
        runs.append((keys, np.arange(start, start + n, dtype=np.int64)))
        start += n
    keys, docs = _merge(runs)
    every_k, every_d = np.concatenate([k for k, _ in runs]), np.concatenate([d for _, d in runs])
    order = np.lexsort((every_d, every_k))  # by key, then document number: older segments hold lower ones
    assert keys.dtype == np.uint64 and docs.dtype == np.int64
    assert (keys == every_k[order]).all() and (docs == every_d[order]).all()


def test_batch_bands_sorted_in_a_worker_equal_sorting_the_subset_here():
    """A worker sorts a batch's band keys once; the deciding process filters that order to the documents it
    adds or pairs. Both must equal a stable sort of the subset, and a filter built over every key of the
    batch (a superset) must find what a filter of the subset finds."""
    rng = np.random.default_rng(3)
    sig = rng.integers(0, 4, (300, 20), dtype=np.uint32)  # few values: many equal band keys across documents
    bands = BatchBands.of(sig, 4, 5)
    flat = bands.keys.ravel()
    assert (flat[bands.order] == np.sort(flat)).all()
    for mask in (np.ones(300, bool), rng.random(300) < 0.3, np.zeros(300, bool)):
        assert (bands.order_of(mask) == np.argsort(bands.keys[mask].ravel(), kind="stable")).all()
        numbers = np.arange(1000, 1300)
        keys, docs = bands.sorted_keys(mask, numbers)
        want = np.argsort(bands.keys[mask].ravel(), kind="stable")
        assert (keys == bands.keys[mask].ravel()[want]).all()
        assert (docs == np.repeat(numbers[mask], 4)[want]).all()
        here, there = KeyIndex(), KeyIndex()
        here.add(bands.keys[mask], np.repeat(numbers[mask], 4))
        there.add_sorted(keys, docs, bands.bloom)
        q = np.concatenate((flat, rng.integers(0, 2**64, 500, dtype=np.uint64)))
        for a, b in zip(here.lookup(q, 8), there.lookup(q, 8), strict=True):
            assert (a == b).all()
        assert (len(there.lookup(flat, 8)[0]) > 0) == mask.any()
