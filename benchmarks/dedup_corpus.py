"""Corpora for benchmarks/dedup.py: real Chinese (the example's law articles) and English (Python stdlib
docstrings) text, and planted near duplicates made by character-level (OCR-like) or word-level edits."""

from __future__ import annotations

import ast
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATES = (0.01, 0.02, 0.03, 0.05, 0.08)  # edits per character (char edits) or per word (word edits)
GROUPS = ("en-char", "en-word", "zh-char", "zh-word")
EN_ALPHABET = "abcdefghijklmnopqrstuvwxyz "


def english_docs(min_chars: int = 300) -> list[str]:
    lib = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    seen, docs = set(), []
    for path in sorted(lib.glob("*.py")) + sorted(lib.glob("*/*.py")):
        if "test" in path.as_posix():
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
                d = ast.get_docstring(node)
                if d and len(d) >= min_chars:
                    d = " ".join(d.split())
                    if d not in seen:
                        seen.add(d)
                        docs.append(d)
    return docs


def chinese_docs() -> list[str]:
    raw = sorted((ROOT / "data/raw/china_law").glob("*.jsonl"))
    if not raw:
        sys.exit("no example data: run `vertical-dag example fetch --no-model` first")
    return [json.loads(line)["text"] for p in raw for line in p.open(encoding="utf-8")]


def _edit(units: list[str], rate: float, rng: random.Random, choices: list[str] | str) -> list[str]:
    """round(rate * len(units)) random insertions, deletions and substitutions (new units from choices)."""
    units = list(units)
    for _ in range(max(1, round(rate * len(units)))):
        op, pos = rng.randrange(3), rng.randrange(len(units))
        if op == 0:
            units.insert(pos, rng.choice(choices))
        elif op == 1 and len(units) > 1:
            del units[pos]
        else:
            units[pos] = rng.choice(choices)
    return units


def char_edit(text: str, rate: float, rng: random.Random, alphabet: str) -> str:
    """OCR-like noise: character insertions, deletions and substitutions."""
    return "".join(_edit(list(text), rate, rng, alphabet))


def words_of(text: str, lang: str) -> list[str]:
    """English words (split at spaces); Chinese has no spaces, so its "words" are 2-character spans (the
    typical length of a Chinese word)."""
    return text.split(" ") if lang == "en" else [text[i : i + 2] for i in range(0, len(text), 2)]


def word_edit(text: str, rate: float, rng: random.Random, vocab: list[str], lang: str) -> str:
    """Editing: word insertions, deletions and substitutions (words from vocab)."""
    return (" " if lang == "en" else "").join(_edit(words_of(text, lang), rate, rng, vocab))


def build_corpus(n_plant: int, seed: int = 0) -> dict:
    """Originals (all zh articles, all en docstrings), then n_plant planted copies: a quarter per group of
    GROUPS, edit rates cycling through RATES. planted: (original, copy, rate, group)."""
    zh, en = chinese_docs(), english_docs()
    texts, lang = zh + en, ["zh"] * len(zh) + ["en"] * len(en)
    rng = random.Random(seed)
    han = "".join(sorted({c for t in zh for c in t if "\u4e00" <= c <= "\u9fff"}))
    vocab = {"en": sorted({w for t in en for w in words_of(t, "en")}),
             "zh": sorted({w for t in zh[:3000] for w in words_of(t, "zh")})}
    pools = {"zh": [i for i, t in enumerate(zh) if len(t) >= 60], "en": list(range(len(zh), len(texts)))}
    planted = []
    for g in GROUPS:
        lg, kind = g.split("-")
        for k, o in enumerate(rng.sample(pools[lg], min(len(pools[lg]), n_plant // len(GROUPS)))):
            rate = RATES[k % len(RATES)]
            copy = (char_edit(texts[o], rate, rng, han if lg == "zh" else EN_ALPHABET) if kind == "char"
                    else word_edit(texts[o], rate, rng, vocab[lg], lg))
            planted.append((o, len(texts), rate, g))
            texts.append(copy)
            lang.append(lg)
    return {"texts": texts, "lang": lang, "planted": planted}


def heavy_corpus(base: list[str], copies: int, seed: int = 0) -> list[str]:
    """`copies` passes over base: the first verbatim, each later one every document with 1-3% OCR-like
    character edits (a corpus that is mostly near duplicates of few texts: scraped mirrors, re-OCRed scans)."""
    rng = random.Random(seed)
    alphabet = "".join(sorted({c for t in base[:2000] for c in t if c.strip()}))[:3000]
    out = list(base)
    for _ in range(copies - 1):
        out += [char_edit(t, rng.choice((0.01, 0.02, 0.03)), rng, alphabet) for t in base]
    return out
