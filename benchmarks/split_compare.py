"""The split stage and the data stages' gates: a baseline checkout against this one, side by side.

ingest -> dedup -> normalize run once (baseline code) on the example repeated SCALE times (benchmarks/scale.py
builds the corpus); then, alternating baseline and new code on copies of that project, `vertical-dag run split
--no-gate`, `vertical-dag gate split` and `vertical-dag gate ingest|dedup|normalize`, each timed with its peak
RSS. The baseline's and the new code's data/splits Parquet contents (and the split ledger) must be identical,
and every gate's verdicts and observed values too. Timings on a shared machine are noisy: compare the ratios.

    python benchmarks/split_compare.py --baseline /work/main --scales 1 10 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import BIN, REPO, build_raw, project_for  # noqa: E402

PREP = ("ingest", "dedup", "normalize")
GATED = ("ingest", "dedup", "normalize", "split")


def vd(project: Path, code: Path, *args: str) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, stderr) of `vertical-dag ARGS` with `code` first on the import path."""
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", str(BIN / "vertical-dag"), *args], cwd=project, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({code}):\n{proc.stderr[-3000:]}")
    return seconds, int(proc.stderr.strip().splitlines()[-1]) / 1024, proc.stderr


def contents(project: Path) -> dict[str, str]:
    """Parquet contents of data/splits (and its ledger) as JSON, per file."""
    import pyarrow.parquet as pq

    out = {}
    for f in sorted((project / "data/splits").rglob("*.parquet")):
        if ".profile" in f.parts:  # the gate's profile (new with the streaming split): not an output to compare
            continue
        out[f.relative_to(project).as_posix()] = pq.read_table(f).to_pandas().to_json()
    out["splits.json"] = json.dumps({k: v for k, v in json.loads((project / "data/splits/splits.json").read_text())
                                     .items()}, sort_keys=True)
    out["README.md"] = (project / "data/splits/README.md").read_text()
    return out


def verdicts(project: Path, stage: str) -> list[tuple]:
    g = json.loads((project / "data/gates" / f"{stage}.json").read_text())
    return [(e["name"], e["success"], json.dumps(e["observed"], sort_keys=True), e["bound"]) for e in g["expectations"]]


def one(prep: Path, work: Path, label: str, code: Path) -> tuple[dict[str, tuple[float, float]], dict, dict]:
    project = work / f"run-{label}"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(prep, project, symlinks=True)
    times = {"split": vd(project, code, "run", "split", "--no-gate")[:2]}
    for stage in GATED:
        times[f"gate {stage}"] = vd(project, code, "gate", stage)[:2]
    return times, contents(project), {s: verdicts(project, s) for s in GATED}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, required=True, help="a checkout of the baseline code (e.g. main)")
    ap.add_argument("--new", type=Path, default=REPO, help="the checkout to compare (default: this one)")
    ap.add_argument("--scales", type=int, nargs="+", default=[1])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vd-split-"))
    example = REPO / "data/raw/china_law"
    codes = {"base": args.baseline.resolve(), "new": args.new.resolve()}
    for scale in args.scales:
        raw = work / f"raw-x{scale}"
        if not raw.exists():
            build_raw(example, raw / "china_law", scale)
        prep = work / f"prep-x{scale}"
        if not (prep / "data/normalized").is_dir():
            made = project_for(work, raw, "1", None)
            for stage in PREP:
                vd(made, codes["base"], "run", stage)
            shutil.rmtree(prep, ignore_errors=True)
            made.rename(prep)
        rows: dict[str, dict[str, list[tuple[float, float]]]] = {"base": {}, "new": {}}
        seen: dict[str, tuple] = {}
        for _ in range(args.rounds):
            for label in ("base", "new"):
                times, data, gates = one(prep, work, f"x{scale}-{label}", codes[label])
                for k, v in times.items():
                    rows[label].setdefault(k, []).append(v)
                seen[label] = (data, gates)
        same_data = seen["base"][0] == seen["new"][0]
        diff = [k for k in seen["base"][0] if seen["base"][0][k] != seen["new"][0].get(k)]
        same_gates = seen["base"][1] == seen["new"][1]
        print(f"# scale {scale}: outputs identical: {same_data}{' (differ: ' + ', '.join(diff) + ')' if diff else ''}; "
              f"gate verdicts identical: {same_gates}")
        if not same_gates:
            for s in GATED:
                if seen["base"][1][s] != seen["new"][1][s]:
                    print(f"#   gate {s}: base {seen['base'][1][s]}\n#            new  {seen['new'][1][s]}")
        print(f"{'scale':>5} {'step':>16} {'base s':>8} {'new s':>8} {'new/base':>8} {'base MB':>8} {'new MB':>8}")
        for k in rows["base"]:
            b, n = min(rows["base"][k]), min(rows["new"][k])
            print(f"{scale:>5} {k:>16} {b[0]:8.1f} {n[0]:8.1f} {n[0] / b[0]:8.2f} {b[1]:8.0f} {n[1]:8.0f}", flush=True)


if __name__ == "__main__":
    main()
