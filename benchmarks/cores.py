"""How much the machine's second (third, ...) core adds, for the two kinds of work the data stages do.

Each workload runs alone, then as N copies at once (one process each, sharing nothing), and the script
prints the throughput of N processes against one. `hashing` is dedup's per-batch work on the example's
texts (canonical forms, shingles, MinHash signatures, band keys: numpy over arrays of megabytes, bound by
the caches and memory bandwidth the cores share); `python` is an interpreter loop that stays in one core's
caches. Where the cores share a cache and memory bandwidth, `hashing` stays below N x: that, not the
executor, bounds what N workers can gain on the array-heavy stages (dedup, split) of that machine.

    python benchmarks/cores.py                   # as many processes as cores
    python benchmarks/cores.py --processes 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale import example_raw, offline_env

WORKLOADS = ("hashing", "python")


def hashing(raw: Path, rounds: int) -> float:
    """Seconds to hash the example's texts `rounds` times (importing and reading them not counted)."""
    from vertical_dag.params import DedupParams
    from vertical_dag.stages.dedup import config_from_params
    from vertical_dag.text.dedup_prepare import prepare_batch

    config = config_from_params(DedupParams())
    texts = [json.loads(line)["text"] for f in sorted(raw.glob("*.jsonl")) for line in f.open(encoding="utf-8")]
    started = time.perf_counter()
    for _ in range(rounds):
        for a in range(0, len(texts), 4096):
            prepare_batch(texts[a : a + 4096], config)
    return time.perf_counter() - started


def python_loop(rounds: int) -> float:
    started, total = time.perf_counter(), 0
    for i in range(rounds * 20_000_000):
        total += i & 7
    return time.perf_counter() - started


def worker(kind: str, raw: Path, rounds: int) -> None:
    print(hashing(raw, rounds) if kind == "hashing" else python_loop(rounds))


def timed(kind: str, raw: Path, rounds: int, n: int) -> float:
    """Seconds the slowest of n simultaneous copies took (imports and reading the texts excluded)."""
    cmd = [sys.executable, __file__, "--worker", kind, "--raw", str(raw), "--rounds", str(rounds)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=offline_env()) for _ in range(n)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a {kind} worker failed")
    return max(float(o.strip().splitlines()[-1]) for o in outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, nargs="+", default=[len(os.sched_getaffinity(0))])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    ap.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.raw, args.rounds)
    raw = example_raw(args.work or Path(tempfile.mkdtemp(prefix="vd-cores-")))
    print(f"{'workload':>8} {'processes':>9} {'one alone':>10} {'each of N':>10} {'throughput':>10}")
    for kind in WORKLOADS:
        alone = timed(kind, raw, args.rounds, 1)
        for n in args.processes:
            each = timed(kind, raw, args.rounds, n)
            print(f"{kind:>8} {n:>9} {alone:9.2f}s {each:9.2f}s {n * alone / each:9.2f}x", flush=True)


if __name__ == "__main__":
    main()
