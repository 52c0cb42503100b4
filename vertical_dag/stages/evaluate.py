"""evaluate: base vs pretrained vs fine-tuned, side by side, with bootstrap intervals and the model gates.

Reads the three model folders, data/splits/test.parquet, the held-out task items the finetune stage wrote
(data/models/finetuned/tasks/eval.jsonl, made from test documents only), the user's eval JSONL files and an
optional general-text corpus. Writes data/reports/eval/{report.html, metrics.json, samples.jsonl,
plots/*.csv}. A failing model gate is written into the metrics and the report (the quality layer turns it
into a failed gate); it is never hidden. An unchanged re-run reuses the previous results.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..modeling import tasks as T
from ..records import atomic_path, read_json, write_json, write_text
from .context import StageContext

MODEL_DIRS = {"base": "data/models/base/model", "pretrained": "data/models/pretrained/model",
              "finetuned": "data/models/finetuned/model"}
EVAL_ITEMS = "data/models/finetuned/tasks/eval.jsonl"
DEFAULT_SAMPLES_ZH = ["《中华人民共和国民法典》第一条规定了什么？", "下面这条规定属于哪个法律部门？\n公民的合法的私有财产不受侵犯。"]


def read_general(root: Path, rel: str, params: Any) -> tuple[list[str], str]:
    """General text for the forgetting check, and what it is.

    When it is the pretraining replay corpus, only the documents pretraining held out (never trained on)
    are used, so the pretrained model is not scored on text it saw.
    """
    from ..modeling.replay import heldout_split, read_general_texts

    texts = read_general_texts(root / rel)
    pre = params.pretrain
    replay = getattr(pre, "replay_path", None)
    if replay and (root / replay).resolve() == (root / rel).resolve() and getattr(pre, "replay_ratio", 0) > 0:
        _, held = heldout_split(len(texts), getattr(pre, "replay_heldout_docs", 0))
        return [texts[i] for i in held], f"{rel} (the {len(held)} documents pretraining held out of replay)"
    return texts, rel


def test_texts(root: Path, max_docs: int, seed: int) -> tuple[list[str], int]:
    import pyarrow.parquet as pq

    path = root / "data/splits/test.parquet"
    if not path.exists():
        return [], 0
    texts = [t for t in pq.read_table(path, columns=["text"]).column("text").to_pylist() if t and t.strip()]
    n = len(texts)
    random.Random(seed).shuffle(texts)
    return texts[:max_docs], n


def held_out_items(root: Path, fp: Any) -> list[T.TaskItem]:
    """Without the finetune stage's eval set: make the same held-out items from the test split here."""
    from .finetune import read_split_docs

    docs = [d for d in read_split_docs(root / "data/splits") if d.split == "test"]
    by_task = T.generate_tasks(docs, T.TASK_FUNCS, max_context_chars=fp.max_context_chars,
                               max_answer_chars=fp.max_answer_chars, seed=fp.seed)
    return T.eval_sample(by_task, fp.eval_items_per_task, fp.seed)


def pick_items(items: list[T.TaskItem], limit: int) -> list[T.TaskItem]:
    """Round-robin over tasks so a small limit still covers every task."""
    by: dict[str, list[T.TaskItem]] = {}
    for it in items:
        by.setdefault(it.task, []).append(it)
    out: list[T.TaskItem] = []
    while len(out) < limit and any(by.values()):
        for t in sorted(by):
            if by[t] and len(out) < limit:
                out.append(by[t].pop(0))
    return out


def baselines(items: list[T.TaskItem]) -> dict[str, float]:
    """What guessing gets: the majority answer's share when a task's options are fixed, else 1/#options."""
    out: dict[str, float] = {}
    for t in sorted({it.task for it in items}):
        group = [it for it in items if it.task == t and it.options]
        if not group:
            continue
        if len(group) > 1 and len({tuple(it.options) for it in group}) == 1:  # a fixed label set
            out[t] = round(Counter(it.response for it in group).most_common(1)[0][1] / len(group), 4)
        else:
            out[t] = round(sum(1 / len(it.options) for it in group) / len(group), 4)
    return out


def _stamp(folder: Path) -> list:
    if not folder.exists():
        return []
    return sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.iterdir() if p.is_file())


def find_loss_csv(folder: Path) -> Path | None:
    """The pretraining loss curve: data/plots/pretrain_loss.csv, else a CSV with step and loss in the model folder."""
    for p in [folder.parents[1] / "plots/pretrain_loss.csv", *sorted(folder.glob("*.csv")), *sorted(folder.glob("*/*.csv"))]:
        if not p.exists():
            continue
        with open(p, newline="") as f:
            header = f.readline()
        if "loss" in header and "step" in header:
            return p
    return None


def run(ctx: StageContext) -> dict[str, Any]:
    import torch

    from ..modeling import evaluate as E
    from ..modeling.generate import GenerationSettings, generate_one, load_for_inference
    from ..modeling.report import read_curve, render_report

    p, fp = ctx.params.evaluate, ctx.params.finetune
    root, out = ctx.project.root, ctx.out
    started = time.perf_counter()
    torch.manual_seed(p.seed)
    dirs = {name: root / rel for name, rel in MODEL_DIRS.items() if (root / rel / "config.json").exists()}
    if "base" not in dirs:
        raise FileNotFoundError(f"no base model at {root / MODEL_DIRS['base']} (run the base_model stage first)")
    notes = [f"{name} model missing ({MODEL_DIRS[name]}): not evaluated" for name in MODEL_DIRS if name not in dirs]

    texts, n_test = test_texts(root, p.max_test_docs, p.seed)
    general_path = root / p.general_corpus if p.general_corpus else None
    general, general_desc = (read_general(root, p.general_corpus, ctx.params)
                             if general_path and general_path.exists() else ([], None))
    if not general:
        notes.append("no general corpus: forgetting (general bits/char) not measured" if not p.general_corpus
                     else f"general corpus {p.general_corpus} not found: forgetting not measured")
    items = pick_items(T.read_items(root / EVAL_ITEMS) or held_out_items(root, fp), p.max_task_items)
    user_items: list[T.TaskItem] = []
    from .finetune import user_files

    for path, line, item, reason in T.read_user_files(user_files(root, p.eval_files), task="user_eval"):
        if item is None:
            notes.append(f"user eval {ctx.project.rel(path)}:{line} skipped: {reason}")
        else:
            user_items.append(item)
    prompts = list(p.sample_prompts) or (DEFAULT_SAMPLES_ZH if ctx.params.project.domain == "legal" else
                                         [it.prompt for it in items[:2]])

    code = [hashlib.sha256(Path(mod.__file__).read_bytes()).hexdigest() for mod in (E, T, sys.modules[__name__],
                                                                                   sys.modules[render_report.__module__])]
    fingerprint = hashlib.sha256(json.dumps([code, p.model_dump(), fp.system_prompt, {k: _stamp(v) for k, v in dirs.items()},
                                             [it.to_json() for it in items + user_items], len(texts), n_test,
                                             len(general), str(general_path)], sort_keys=True, default=str).encode()).hexdigest()[:16]
    state = read_json(out / "state.json", {})
    if state.get("fingerprint") == fingerprint and (out / "report.html").exists() and (out / "metrics.json").exists():
        ctx.log.info("models, data and params unchanged: reusing the previous evaluation")
        return {**state["metrics"], "skipped": True, "seconds": round(time.perf_counter() - started, 2)}

    models: dict[str, dict[str, Any]] = {}
    per_item: dict[str, list[float]] = {}
    task_of: list[str] = []
    samples = [{"prompt": s} for s in prompts]
    gen = GenerationSettings(mode="greedy", max_new_tokens=p.sample_max_new_tokens, repetition_penalty=1.1,
                             stop=list(fp.generation.stop), system_prompt=fp.system_prompt)
    boot = {"samples": p.bootstrap_samples, "confidence": p.confidence, "seed": p.seed}
    domain_docs = 0
    for name, folder in dirs.items():
        t0 = time.perf_counter()
        model, tok = load_for_inference(folder, p.device)
        row: dict[str, Any] = {}
        if texts:
            s = E.score_texts(model, tok, texts, max_tokens=p.max_test_tokens, block_size=p.block_size, batch_size=p.batch_size)
            row.update(domain_ppl=round(s.ppl, 4), domain_bpc=round(s.bpc, 4), domain_tokens=s.tokens, domain_chars=s.chars)
            domain_docs = s.docs
        if general:
            g = E.score_texts(model, tok, general, max_tokens=p.max_general_tokens, block_size=p.block_size, batch_size=p.batch_size)
            row.update(general_ppl=round(g.ppl, 4), general_bpc=round(g.bpc, 4), general_tokens=g.tokens)
        if items:
            res = E.score_items(model, tok, items, system_prompt=fp.system_prompt, max_free=p.max_free_answer_items,
                                max_option_chars=p.max_option_chars)
            row.update(E.summarize(res, **boot))
            per_item[name] = [r.correct for r in res]
            task_of = [r.task for r in res]  # the same items in the same order for every model
        if user_items:
            ures = E.score_items(model, tok, user_items, system_prompt=fp.system_prompt, max_free=len(user_items))
            u = E.summarize(ures, **boot)
            row.update(user_eval_accuracy=u["task_accuracy"], user_eval_accuracy_ci=u["task_accuracy_ci"],
                       user_eval_items=u["task_items"])
        for smp in samples:
            smp[name] = generate_one(model, tok, smp["prompt"], gen)["output"]
        row["seconds"] = round(time.perf_counter() - t0, 1)
        ctx.log.info("%s: domain bpc %s, general bpc %s, task accuracy %s %s (%.0f s)", name, row.get("domain_bpc"),
                     row.get("general_bpc"), row.get("task_accuracy"), row.get("task_accuracy_ci"), row["seconds"])
        models[name] = row
        del model
        gc.collect()

    comparisons = {}
    for a, b in (("base", "finetuned"), ("base", "pretrained"), ("pretrained", "finetuned")):
        if a in per_item and b in per_item:
            comparisons[f"{b} - {a}"] = E.paired_difference(per_item[a], per_item[b], task_of, **boot)
    metrics: dict[str, Any] = {
        "models": models,
        "comparisons": comparisons,
        "task_baselines": baselines(items),
        "confidence": p.confidence,
        "bootstrap_samples": p.bootstrap_samples,
        "domain_docs": domain_docs,
        "general_corpus": general_desc if general else None,
        "eval_items": len(items),
        "user_eval_items": len(user_items),
        "note": "; ".join(notes),
        "samples": samples,
        # the data contract's counts: documents here are the test documents offered to the domain measurement
        "documents_in": min(len(texts), p.max_test_docs),
        "documents_out": domain_docs,
        "dropped": min(len(texts), p.max_test_docs) - domain_docs,
        "quarantined": 0,
        "drops_by_reason": {"over_token_budget": min(len(texts), p.max_test_docs) - domain_docs} if len(texts) > domain_docs else {},
        "headline": {f"{m}_{k}": v.get(k) for m, v in models.items() for k in ("domain_bpc", "general_bpc", "task_accuracy")},
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(metrics, out / "metrics.json")
    _write_plots(ctx, models)
    with atomic_path(out / "samples.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    curves = {"pretrain": read_curve(find_loss_csv(root / "data/models/pretrained")),
              "finetune": read_curve(root / "data/models/finetuned/loss.csv")}
    write_text(render_report(metrics, curves), out / "report.html")
    write_json({"fingerprint": fingerprint, "metrics": metrics}, out / "state.json")
    ctx.log.info("report: %s", ctx.project.rel(out / "report.html"))
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics


def _write_plots(ctx: StageContext, models: dict[str, dict[str, Any]]) -> None:
    """One small CSV per headline metric (model, value) for `dvc plots show` (bar charts), where the stage
    registry declares them."""
    for plot in ctx.spec.plots:
        key = plot.x
        with atomic_path(ctx.project.root / plot.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model", key])
            for name, row in models.items():
                if row.get(key) is not None:
                    w.writerow([name, row[key]])


def after_gate(ctx: StageContext, metrics: dict[str, Any], gate: Any) -> None:
    """The report shows the model gates as the quality gate judged them (quality/suites.py)."""
    from ..modeling.report import read_curve, render_report

    root, out = ctx.project.root, ctx.out
    shown = {**metrics, "gates": {e.name: {"success": e.success, "observed": e.observed, "bound": e.bound,
                                           "description": e.description} for e in gate.expectations}}
    curves = {"pretrain": read_curve(find_loss_csv(root / "data/models/pretrained")),
              "finetune": read_curve(root / "data/models/finetuned/loss.csv")}
    write_text(render_report(shown, curves), out / "report.html")
