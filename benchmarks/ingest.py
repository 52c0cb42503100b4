"""Ingest throughput (MB/s) and peak memory on the example corpus and on a generated 200 MB JSONL.

    .venv/bin/python benchmarks/ingest.py [--mb 200] [--keep]

Each case runs `vertical-dag run ingest` logic (run_stage, gate off) in its own subprocess inside a temporary
project, so the peak RSS (VmHWM, else ru_maxrss) of one case is not inflated by another or by the data generator.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARAMS = """project: {name: bench, domain: general, seed: 1}
ingest:
  sources:
    - {name: china_law, format: jsonl, text_field: text, id_field: id}
  max_doc_chars: 2000000
"""


def make_project(root: Path) -> Path:
    (root / "data" / "raw").mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(PARAMS)
    (root / "dvc.yaml").write_text("stages: {}\n")
    return root


def generate_jsonl(path: Path, mb: float, seed: int = 0) -> int:
    """Mixed Chinese/English documents of 200-4000 characters, written line by line until `mb` is reached."""
    import numpy as np
    import orjson

    rng = np.random.default_rng(seed)
    # One big pool of common CJK characters (U+4E00..U+7FFF) and English words; documents are random slices.
    cjk = rng.integers(0x4E00, 0x8000, size=4_000_000, dtype=np.uint32)
    cjk[rng.random(cjk.size) < 0.06] = ord("，")
    cjk[rng.random(cjk.size) < 0.03] = ord("。")
    cjk_pool = cjk.astype("<u4").tobytes().decode("utf-32-le")
    words = np.array("the law shall apply to any contract party who agrees under article section clause court "
                     "provision liability damages notice within days of receipt such person may request".split())
    eng_pool = " ".join(words[rng.integers(0, words.size, size=800_000)])
    target = int(mb * 2**20)
    written, n = 0, 0
    with open(path, "wb") as f:
        while written < target:
            lengths = rng.integers(200, 4000, size=1024)
            starts_c = rng.integers(0, len(cjk_pool) - 4000, size=1024)
            starts_e = rng.integers(0, len(eng_pool) - 4000, size=1024)
            english = rng.random(1024) < 0.3
            lines = []
            for i in range(1024):
                L, s = int(lengths[i]), int(starts_c[i])
                text = eng_pool[starts_e[i]:starts_e[i] + L] if english[i] else cjk_pool[s:s + L]
                lines.append(orjson.dumps({"id": f"doc-{n}", "text": text, "kind": "en" if english[i] else "zh", "n": n}))
                n += 1
            block = b"\n".join(lines) + b"\n"
            f.write(block)
            written += len(block)
    return n


def peak_rss_mb() -> float:
    """High-water RSS of this process. VmHWM belongs to this program's memory map; ru_maxrss on Linux also
    keeps the parent's peak across fork+exec, which would charge the data generator to the first case."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(root: Path) -> None:
    """Run ingest once in `root` and print its metrics and this process's peak RSS (one JSON line)."""
    import vertical_dag.stages.ingest  # noqa: F401  (imports count in the baseline, not in the peak)
    from vertical_dag.project import Project
    from vertical_dag.stages.context import run_stage

    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    metrics = run_stage("ingest", Project(root), gate=False)
    wall = time.perf_counter() - t0
    print(json.dumps({"metrics": metrics, "wall_s": wall, "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": rss_before}))


def run_case(name: str, root: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", str(root)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: ingest failed\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    m = out["metrics"]
    mb = m["bytes_read"] / 2**20
    print(f"{name:>14}: {mb:8.1f} MB, {m['documents_out']:>8} docs, {m['quarantined']} quarantined | "
          f"read {m['mb_per_s']:6.1f} MB/s ({m['docs_per_s']:.0f} docs/s), stage {out['wall_s']:.1f} s "
          f"-> {mb / out['wall_s']:.1f} MB/s end to end | peak RSS {out['peak_rss_mb']:.0f} MB "
          f"({out['rss_after_imports_mb']:.0f} MB after imports)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200.0, help="size of the generated JSONL")
    ap.add_argument("--keep", action="store_true", help="keep the temporary projects")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child))
        return
    tmp = Path(tempfile.mkdtemp(prefix="vdag-bench-"))
    try:
        example = REPO / "data" / "raw" / "china_law"
        if example.is_dir() and any(example.glob("*.jsonl")):
            root = make_project(tmp / "example")
            shutil.copytree(example, root / "data" / "raw" / "china_law")
            run_case("example", root)
        else:
            print("example: data/raw/china_law not found (run `vertical-dag example fetch --no-model`); skipped")
        root = make_project(tmp / "synthetic")
        t0 = time.perf_counter()
        (root / "data" / "raw" / "synthetic").mkdir()
        n = generate_jsonl(root / "data" / "raw" / "synthetic" / "big.jsonl", args.mb)
        print(f"generated {args.mb:.0f} MB JSONL ({n} documents) in {time.perf_counter() - t0:.1f} s")
        run_case(f"jsonl {args.mb:.0f} MB", root)
        rerun = run_case("unchanged", root)  # incremental: nothing to read, only fingerprints checked
        assert rerun["metrics"]["files_skipped_unchanged"] == 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
