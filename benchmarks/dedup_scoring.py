"""Scoring for benchmarks/dedup.py: true Jaccard of shingle sets, the planted and target views, F1 per kind of edit."""

from __future__ import annotations

import numpy as np
from dedup_corpus import GROUPS, RATES


def shingle_args(cfg) -> dict:
    """Our shingling for the other systems (also when --baseline-code's DedupConfig predates ngram_chars)."""
    return cfg.shingle_args() if hasattr(cfg, "shingle_args") else {"ngram_cjk": cfg.ngram_cjk,
                                                                    "ngram_words": cfg.ngram_words}


class Jaccard:
    def __init__(self, texts: list[str], cfg):
        self.texts, self.cfg, self.cache = texts, cfg, {}

    def set(self, i: int) -> np.ndarray:
        from vertical_dag.text.canonical import canonical_text
        from vertical_dag.text.shingles import shingle_set

        if i not in self.cache:
            self.cache[i] = shingle_set(canonical_text(self.texts[i]), **shingle_args(self.cfg))
        return self.cache[i]

    def __call__(self, i: int, j: int) -> float:
        from vertical_dag.text.minhash import exact_jaccard

        return exact_jaccard(self.set(i), self.set(j))


def score(result: dict, planted: list, jac: Jaccard, threshold: float) -> dict:
    match, found = np.array(result["match"]), result["found"]

    def root(i: int) -> int:
        while match[i] >= 0:
            i = int(match[i])
        return i

    def good_drop(d: int) -> bool:
        return any(jac(d, m) >= threshold for m in found[d])

    detected = {v: match[v] >= 0 and root(v) == root(o) for o, v, *_ in planted}
    tp = sum(detected.values())
    fp = sum(1 for o, v, *_ in planted if match[v] >= 0 and not detected[v] and not good_drop(v))
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / len(planted)
    by_rate = {}
    for rate in RATES:
        vs = [v for o, v, rr, _ in planted if rr == rate]
        by_rate[f"{rate:.0%}"] = round(sum(detected[v] for v in vs) / len(vs), 3) if vs else None
    # target view: truth = exact Jaccard >= threshold
    pos = [v for o, v, *_ in planted if jac(o, v) >= threshold]
    drops = np.flatnonzero(match >= 0)
    tp_t = sum(1 for d in drops if good_drop(int(d)))
    p_t = tp_t / len(drops) if len(drops) else 1.0
    r_t = sum(detected[v] for v in pos) / len(pos) if pos else 1.0
    f1 = lambda a, b: 2 * a * b / (a + b) if a + b else 0.0  # noqa: E731
    return {"planted": {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1(p, r), 4),
                        "recall_by_edit_rate": by_rate},
            "target": {"precision": round(p_t, 4), "recall": round(r_t, 4), "f1": round(f1(p_t, r_t), 4),
                       "planted_pairs_above_threshold": len(pos)},
            "dropped": int(len(drops))}


def group_scores(match: np.ndarray, planted: list) -> dict:
    """Planted view per kind of edit, without a truth of its own (so every shingle scheme is judged alike): a
    copy is found when it lands in its original's cluster, a false positive when it lands in another one."""

    def root(i: int) -> int:
        while match[i] >= 0:
            i = int(match[i])
        return i

    out, all_tp, all_fp = {}, 0, 0
    for g in GROUPS:
        pairs = [(o, v) for o, v, _, gg in planted if gg == g]
        tp = sum(1 for o, v in pairs if match[v] >= 0 and root(v) == root(o))
        fp = sum(1 for o, v in pairs if match[v] >= 0 and root(v) != root(o))
        p, r = tp / (tp + fp) if tp + fp else 1.0, tp / len(pairs) if pairs else 1.0
        out[g] = {"f1": round(2 * p * r / (p + r), 3) if p + r else 0.0, "precision": round(p, 3), "recall": round(r, 3)}
        all_tp, all_fp = all_tp + tp, all_fp + fp
    out["precision"] = round(all_tp / (all_tp + all_fp), 3) if all_tp + all_fp else 1.0
    n_orig = min(v for _, v, *_ in planted)
    out["originals_dropped"] = int((match[:n_orig] >= 0).sum())
    return out


