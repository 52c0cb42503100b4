"""Benchmark: normalisation throughput, and PII precision / recall on planted items.

    python benchmarks/normalize.py [--mb 200] [--pii-items 4000] [--out results.json]
    python benchmarks/normalize.py --baseline-code /tmp/base   # MB/s per core against another checkout

1. Throughput (MB of UTF-8 input text per second) of clean + PII + quality filters + language id
   - on the example corpus (data/raw/china_law/*.jsonl, legal preset, allowed language zh), when present;
   - on a generated corpus of --mb megabytes (Chinese statute-like text, English prose, markup, invisible
     characters, full-width forms and PII), general preset, any language.
2. PII precision and recall on a generated set: every PII type in several surface forms (mainland mobiles with and
   without +86 and grouping, landlines, international and North-American numbers, resident IDs with valid GB 11643
   check characters, Luhn-valid cards of several schemes and groupings, IPv4/IPv6, e-mails), and look-alikes that
   must survive: IDs with a wrong check character or impossible date, 17/18-digit statute and document numbers,
   non-Luhn card numbers, dates (2021-08-20, 2021年8月20日, 20210820), version numbers, times, amounts, postcodes,
   ISBNs. Each item is redacted inside a sentence of its own; an item is a true positive when it is replaced by
   exactly one placeholder of its type and nothing else in the sentence is touched.
Generators here are written independently of vertical_dag/text/pii.py (own check-digit and Luhn code).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("VERTICAL_DAG_CODE", str(ROOT)))  # --baseline-code runs another checkout

from vertical_dag.text.clean import CleanOptions  # noqa: E402
from vertical_dag.text.normalizer import Normalizer, NormalizerConfig  # noqa: E402
from vertical_dag.text.pii import Redactor  # noqa: E402
from vertical_dag.text.quality import resolve_thresholds  # noqa: E402

# ---------------------------------------------------------------- independent generators

PROVINCES = [11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54,
             61, 62, 63, 64, 65]
W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def id_check(body: str) -> str:
    return "10X98765432"[sum(int(c) * w for c, w in zip(body, W, strict=True)) % 11]


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):  # positions that will be doubled once the check digit is appended
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def rdigits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def birth(rng: random.Random) -> str:
    return f"{rng.randint(1940, 2010)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"


def gen_id(rng: random.Random) -> str:
    body = f"{rng.choice(PROVINCES)}{rdigits(rng, 4)}{birth(rng)}{rdigits(rng, 3)}"
    return body + id_check(body)


def gen_card(rng: random.Random) -> str:
    prefix, length = rng.choice([("622202", 19), ("622848", 19), ("6212", 16), ("4", 16), ("51", 16), ("55", 16),
                                 ("37", 15), ("6011", 16), ("35", 16)])
    body = prefix + rdigits(rng, length - 1 - len(prefix))
    card = body + luhn_digit(body)
    style = rng.random()
    if style < 0.3 and length == 16:
        return " ".join(card[i:i + 4] for i in range(0, 16, 4))
    if style < 0.45 and length == 16:
        return "-".join(card[i:i + 4] for i in range(0, 16, 4))
    return card


def gen_phone(rng: random.Random) -> str:
    mobile = f"1{rng.choice('3456789')}{rdigits(rng, 9)}"
    forms = [
        lambda: mobile,
        lambda: f"+86 {mobile}",
        lambda: f"+86-{mobile[:3]}-{mobile[3:7]}-{mobile[7:]}",
        lambda: f"{mobile[:3]} {mobile[3:7]} {mobile[7:]}",
        lambda: f"010-{rng.randint(2, 8)}{rdigits(rng, 7)}",
        lambda: f"0{rng.randint(20, 29)}-{rng.randint(2, 8)}{rdigits(rng, 7)}",
        lambda: f"（0{rng.randint(311, 999)}）{rng.randint(2, 8)}{rdigits(rng, 6)}",
        lambda: f"0{rng.randint(311, 999)}-{rng.randint(2, 8)}{rdigits(rng, 6)}转{rdigits(rng, 3)}",
        lambda: f"+44 20 {rdigits(rng, 4)} {rdigits(rng, 4)}",
        lambda: f"+1 ({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rdigits(rng, 4)}",
        lambda: f"+81 3-{rdigits(rng, 4)}-{rdigits(rng, 4)}",
        lambda: f"+49 30 {rdigits(rng, 8)}",
        lambda: f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rdigits(rng, 4)}",
        lambda: f"{rng.randint(201, 989)}-{rng.randint(200, 999)}-{rdigits(rng, 4)}",
    ]
    return rng.choice(forms)()


def gen_email(rng: random.Random) -> str:
    user = rng.choice(["zhang.san", "li_si", "wangwu88", "john.smith+legal", "a.b-c", "service", "hr2021"])
    domain = rng.choice(["example.com", "mail.example.com.cn", "qq.com", "163.com", "law-firm.org", "gov.cn"])
    return f"{user}{rng.randint(0, 999)}@{domain}"


def gen_ip(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return ".".join(str(rng.randint(1 if i == 0 else 0, 255)) for i in range(4))
    groups = [f"{rng.randint(0, 65535):x}" for _ in range(8)]
    return ":".join(groups) if rng.random() < 0.5 else f"{groups[0]}:{groups[1]}::{groups[7]}"


def gen_lookalike(rng: random.Random) -> str:
    y, m, d = rng.randint(1950, 2025), rng.randint(1, 12), rng.randint(1, 28)
    kinds = [
        lambda: (lambda b: b + rng.choice([c for c in "0123456789X" if c != id_check(b)]))(
            f"{rng.choice(PROVINCES)}{rdigits(rng, 4)}{birth(rng)}{rdigits(rng, 3)}"),  # wrong check character
        lambda: (lambda b: b + id_check(b))(f"{rng.choice(PROVINCES)}{rdigits(rng, 4)}{y}13{d:02d}{rdigits(rng, 3)}"),
        lambda: f"{rng.randint(1, 9)}{rdigits(rng, 17)}",  # 18-digit statute / document number
        lambda: f"{y}{rdigits(rng, 13)}",  # 17-digit document number
        lambda: (lambda b: b + str((int(luhn_digit(b)) + rng.randint(1, 9)) % 10))("6222" + rdigits(rng, 14)),  # non-Luhn
        lambda: (lambda b: b + str((int(luhn_digit(b)) + rng.randint(1, 9)) % 10))("4" + rdigits(rng, 14)),
        lambda: f"{y}-{m:02d}-{d:02d}", lambda: f"{y}年{m}月{d}日", lambda: f"{y}{m:02d}{d:02d}",
        lambda: f"{y}/{m:02d}/{d:02d}", lambda: f"{y}.{m:02d}.{d:02d}", lambda: f"{y}-{m:02d}-{d:02d} 12:{rng.randint(10, 59)}:05",
        lambda: f"v{rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}",
        lambda: f"版本 {rng.randint(1, 12)}.{rng.randint(0, 9)}.{rng.randint(0, 30000)}.{rng.randint(0, 9)}",
        lambda: f"version {rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}",
        lambda: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
        lambda: f"{rng.randint(1, 999)},{rdigits(rng, 3)},{rdigits(rng, 3)}.{rdigits(rng, 2)}元",
        lambda: f"邮编{rng.randint(1, 8)}{rdigits(rng, 5)}",
        lambda: f"ISBN 978-7-{rdigits(rng, 3)}-{rdigits(rng, 5)}-{rng.randint(0, 9)}",
        lambda: f"第{rng.randint(1, 1260)}条", lambda: f"{rng.randint(1, 99)}.{rng.randint(1, 99)}%",
        lambda: f"国发〔{y}〕{rng.randint(1, 99)}号",
    ]
    return rng.choice(kinds)()


CONTEXTS_ZH = ["联系方式：{x}。", "如有疑问请致电{x}咨询。", "当事人（证件号{x}）于当日到庭", "详见{x}，不再赘述。",
               "账户{x}已冻结", "{x}", "依据{x}的规定办理", "请将材料发送至{x}，逾期不予受理。"]
CONTEXTS_EN = ["Contact: {x}.", "Please reach the clerk at {x} before noon.", "Ref {x} applies.", "({x})", "see {x}; then"]
GENERATORS = {"ID_CARD": gen_id, "BANK_CARD": gen_card, "PHONE": gen_phone, "EMAIL": gen_email, "IP": gen_ip}


def pii_benchmark(n_items: int, seed: int = 7) -> dict:
    rng = random.Random(seed)
    redactor = Redactor()
    tp = fp = fn = 0
    per_type: dict[str, Counter] = {t: Counter() for t in [*GENERATORS, "LOOKALIKE"]}
    misses: list[str] = []
    for k in range(n_items):
        kind = "LOOKALIKE" if k % 3 == 2 else list(GENERATORS)[k % len(GENERATORS)]
        item = gen_lookalike(rng) if kind == "LOOKALIKE" else GENERATORS[kind](rng)
        sentence = rng.choice(CONTEXTS_ZH + CONTEXTS_EN).format(x=item)
        red = redactor.redact(sentence)
        if kind == "LOOKALIKE":
            if red.counts:
                fp += red.total
                per_type[kind]["fp"] += 1
                misses.append(f"FP {red.counts} {sentence!r}")
            else:
                per_type[kind]["ok"] += 1
            continue
        if red.counts == {kind: 1} and item not in red.text and red.text == sentence.replace(item, f"<{kind}>"):
            tp += 1
            per_type[kind]["tp"] += 1
        else:
            fn += 1
            per_type[kind]["fn"] += 1
            wrong = sum(v for t, v in red.counts.items() if t != kind) + max(red.counts.get(kind, 0) - 1, 0)
            fp += wrong
            misses.append(f"FN {red.counts} {sentence!r} -> {red.text!r}")
    return {
        "items": n_items,
        "precision": round(tp / max(tp + fp, 1), 5),
        "recall": round(tp / max(tp + fn, 1), 5),
        "true_positives": tp, "false_positives": fp, "false_negatives": fn,
        "per_type": {t: dict(c) for t, c in per_type.items()},
        "examples_of_errors": misses[:10],
    }


# ---------------------------------------------------------------- throughput


def example_texts() -> list[str]:
    texts = []
    for path in sorted(glob.glob(str(ROOT / "data/raw/china_law/*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            texts.extend(json.loads(line)["text"] for line in f if line.strip())
    return texts


ENGLISH = ("The parties agree that any dispute arising out of or in connection with this contract shall be "
           "referred to arbitration. Notices shall be given in writing and delivered by hand or by registered post. "
           "Nothing in this clause limits the rights of either party under the applicable law of the jurisdiction.")


def generated_docs(rng: random.Random, base: list[str], n: int) -> list[str]:
    docs = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6 and base:
            text = "\n".join(rng.choice(base) for _ in range(rng.randint(1, 6)))
        else:
            words = ENGLISH.split()
            rng.shuffle(words)
            text = " ".join(words[: rng.randint(20, len(words))]) + "."
        if rng.random() < 0.3:
            text = f"<p>{text}</p>\u200b&nbsp;"
        if rng.random() < 0.2:
            text += f" 联系{gen_phone(rng)}，邮箱 {gen_email(rng)}"
        if rng.random() < 0.1:
            text = text.replace("1", "１").replace("，", ",")
        docs.append(text)
    return docs


def throughput(normalizer: Normalizer, batches) -> dict:
    n_bytes = n_docs = kept = 0
    seconds = 0.0
    for batch in batches:
        n_bytes += sum(len(t.encode()) for t in batch)
        n_docs += len(batch)
        t0 = time.process_time()  # CPU seconds of this one-threaded loop: MB/s per core, fair on a busy machine
        kept += sum(r.text is not None for r in normalizer.process(batch))
        seconds += time.process_time() - t0
    return {"mb": round(n_bytes / 2**20, 2), "documents": n_docs, "kept": kept, "cpu_seconds": round(seconds, 2),
            "mb_per_s_per_core": round(n_bytes / 2**20 / seconds, 3) if seconds else 0.0}


def english_texts() -> list[str]:
    """Real English text that ships with Python: the docstrings of the standard library's modules and classes."""
    import importlib
    import warnings

    texts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(sys.stdlib_module_names):
            if name.startswith("_") or name in ("antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"):
                continue
            try:
                mod = importlib.import_module(name)
            except Exception:
                continue
            for obj in [mod, *vars(mod).values()][:200]:
                doc = getattr(obj, "__doc__", None)
                if isinstance(doc, str) and len(doc) > 40:
                    texts.append(doc)
    return list(dict.fromkeys(texts))


def corpus_throughput(repeats: int) -> dict:
    """Best of `repeats` passes over the example (legal preset, zh) and over English docstrings (general preset)."""
    runs = {"example": (example_texts(), Normalizer(NormalizerConfig(thresholds=resolve_thresholds("legal"),
                                                                     allowed_languages=("zh",)))),
            "english_docstrings": (english_texts(), Normalizer(NormalizerConfig(thresholds=resolve_thresholds("general"))))}
    out = {}
    for name, (texts, normalizer) in runs.items():
        if not texts:
            continue
        normalizer.process(texts[:256])  # warm: the language model and character tables load once
        best = min((throughput(normalizer, (texts[i:i + 2048] for i in range(0, len(texts), 2048)))
                    for _ in range(repeats)), key=lambda r: r["cpu_seconds"])
        out[name] = best
    return out


def compare(baseline: Path, repeats: int) -> dict:
    """This checkout's normalizer against a baseline checkout's (e.g. `git worktree add /tmp/base main`), each in
    its own process on the same corpora, alternating, best of `repeats` each."""
    import subprocess

    results: dict[str, list[dict]] = {"baseline": [], "this": []}
    for _ in range(repeats):
        for name, code in (("baseline", baseline), ("this", ROOT)):
            proc = subprocess.run([sys.executable, __file__, "--throughput-only"], capture_output=True, text=True,
                                  env={**os.environ, "VERTICAL_DAG_CODE": str(code)}, check=True)
            results[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report = {}
    for corpus in results["this"][0]:
        best = {name: max(r[corpus]["mb_per_s_per_core"] for r in runs) for name, runs in results.items()}
        report[corpus] = {**{f"{k}_mb_per_s_per_core": v for k, v in best.items()},
                          "ratio_vs_baseline": round(best["this"] / best["baseline"], 2)}
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=200.0, help="size of the generated corpus (MB of UTF-8 text)")
    ap.add_argument("--pii-items", type=int, default=6000)
    ap.add_argument("--out", help="also write the results as JSON here")
    ap.add_argument("--baseline-code", type=Path, help="a checkout to compare throughput with, side by side")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--throughput-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.throughput_only:
        print(json.dumps(corpus_throughput(1)))
        return 0
    if args.baseline_code:
        print(json.dumps(compare(args.baseline_code, args.repeats), indent=2))
        return 0
    results: dict = {}

    results["pii"] = pii_benchmark(args.pii_items)
    print(json.dumps({"pii": {k: v for k, v in results["pii"].items() if k != "examples_of_errors"}}, ensure_ascii=False))

    base = example_texts()
    legal = Normalizer(NormalizerConfig(clean=CleanOptions(), thresholds=resolve_thresholds("legal"),
                                        allowed_languages=("zh",)))
    if base:
        results["example"] = throughput(legal, (base[i:i + 2048] for i in range(0, len(base), 2048)))
        print(json.dumps({"example": results["example"]}))

    general = Normalizer(NormalizerConfig(clean=CleanOptions(), thresholds=resolve_thresholds("general")))
    rng = random.Random(11)
    target = args.mb * 2**20

    def gen_batches():
        made = 0
        while made < target:
            batch = generated_docs(rng, base, 1000)
            made += sum(len(t.encode()) for t in batch)
            yield batch

    results["generated"] = throughput(general, gen_batches())
    print(json.dumps({"generated": results["generated"]}))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
