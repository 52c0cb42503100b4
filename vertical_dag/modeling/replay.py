"""Replay of general text during continued pretraining, controlled at the token level.

A target ratio r means: of all training tokens, a share r is general text. General documents are taken in
a seeded order until exactly r / (1 - r) times the domain token count is reached (the last one is cut at
the token), so the realised ratio is the target up to rounding; the trainer measures it again on the tokens
it actually consumed. A held-out slice of the general text, never replayed, measures forgetting.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def read_general_texts(path: Path | str, min_chars: int = 20, text_field: str = "text",
                       readers: Sequence[Callable[[Path], list[str] | None]] = ()) -> list[str]:
    """General text from a .txt (one paragraph per line), .jsonl or .parquet, or a folder of them.

    readers: a vertical's own readers (plugins), tried first on each file; the first that recognises the
    file (returns a list, not None) reads it.
    """
    path = Path(path)
    if path.is_dir():
        texts: list[str] = []
        for p in sorted(path.iterdir()):
            if p.suffix in {".txt", ".jsonl", ".parquet"}:
                texts.extend(read_general_texts(p, min_chars, text_field, readers))
        return texts
    own = next((got for got in (read(path) for read in readers) if got is not None), None)
    if own is not None:
        texts = own
    elif path.suffix == ".parquet":
        texts = [t for t in pq.read_table(path, columns=[text_field]).column(text_field).to_pylist() if t]
    elif path.suffix == ".jsonl":
        texts = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    rec = json.loads(line)
                    texts.append(str(rec.get(text_field, "")))
    else:
        texts = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    return [t for t in texts if len(t) >= min_chars]


@dataclass
class ReplaySelection:
    docs: list[np.ndarray]  # token arrays to mix into training
    heldout: list[np.ndarray]  # never trained on: forgetting is measured here
    target_tokens: int
    selected_tokens: int
    available_tokens: int
    repeated: bool  # the general pool was smaller than the target and was cycled


def heldout_split(n_docs: int, heldout_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (pool, heldout): the last `heldout_docs` general documents are reserved for forgetting checks."""
    k = min(heldout_docs, n_docs // 10 if n_docs >= 10 else 0)
    return np.arange(n_docs - k), np.arange(n_docs - k, n_docs)


def select_replay(general: list[np.ndarray], domain_tokens: int, ratio: float, seed: int,
                  heldout_docs: int = 200) -> ReplaySelection:
    """Pick general documents (in a seeded order) totalling exactly ratio/(1-ratio) * domain_tokens tokens.

    Token counts include each document's EOS, as packed.
    """
    pool_idx, held_idx = heldout_split(len(general), heldout_docs)
    heldout = [general[i] for i in held_idx]
    pool = [general[i] for i in pool_idx if len(general[i])]
    available = sum(len(d) + 1 for d in pool)
    target = int(round(ratio / (1.0 - ratio) * domain_tokens)) if ratio > 0 else 0
    if target == 0 or not pool:
        return ReplaySelection([], heldout, target, 0, available, False)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    total, repeated = 0, False
    while total < target:
        for i in rng.permutation(len(pool)):
            need = target - total
            doc = pool[int(i)]
            if len(doc) + 1 > need:
                if need > 1:  # cut at the token; the packer adds the EOS
                    chosen.append(doc[: need - 1])
                    total += need
                else:
                    total = target
                break
            chosen.append(doc)
            total += len(doc) + 1
        else:
            repeated = True
            continue
        break
    return ReplaySelection(chosen, heldout, target, total, available, repeated)
