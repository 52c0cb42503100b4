"""evaluate: base vs pretrained vs fine-tuned, side by side, every headline number with a bootstrap interval.

Reads the three model folders, data/splits/test.parquet, the held-out task items the finetune stage wrote
(data/models/finetuned/tasks/eval.jsonl, made from test documents only), the user's benchmark files
(evaluate.eval_files) and an optional general-text corpus. Writes data/reports/eval/{report.html,
samples.jsonl} and the plot tables the registry declares; its metrics are data/metrics/evaluate.json. The
stage reports numbers; the model gates that judge them are the quality layer's (bounds under `gates:`),
and the report shows their verdict. DVC decides when it runs again.
"""

from __future__ import annotations

import csv
import gc
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..modeling import tasks as T
from ..modeling.task_files import TaskFile, read_task_file
from ..plugins import Registry, load_registry
from ..records import atomic_path, write_text
from . import STAGES
from .context import StageContext

MODELS = {"base": "base_model", "pretrained": "pretrain", "finetuned": "finetune"}  # report name -> stage


def model_dirs(ctx: StageContext) -> dict[str, Path]:
    return {name: ctx.input(stage) / "model" for name, stage in MODELS.items()}


def read_general(root: Path, rel: str, params: Any, registry: Registry) -> tuple[list[str], str]:
    """General text for the forgetting check, and what it is.

    When it is the pretraining replay corpus, only the documents pretraining held out (never trained on)
    are used, so the pretrained model is not scored on text it saw.
    """
    from ..modeling.replay import heldout_split, read_general_texts

    texts = read_general_texts(root / rel, readers=registry.general_readers)
    pre = params.pretrain
    if pre.replay_path and (root / pre.replay_path).resolve() == (root / rel).resolve() and pre.replay_ratio > 0:
        _, held = heldout_split(len(texts), pre.replay_heldout_docs)
        return [texts[i] for i in held], f"{rel} (the {len(held)} documents pretraining held out of replay)"
    return texts, rel


def test_texts(splits: Path) -> list[str]:
    import pyarrow.parquet as pq

    path = splits / "test.parquet"
    if not path.exists():
        return []
    return [t for t in pq.read_table(path, columns=["text"]).column("text").to_pylist() if t and t.strip()]


def held_out_items(splits: Path, fp: Any, registry: Registry) -> list[T.TaskItem]:
    """Without the finetune stage's eval set: make the same held-out items from the test split here."""
    from .finetune import read_split_docs

    docs = [d for d in read_split_docs(splits) if d.split == "test"]
    by_task = T.generate_tasks(docs, registry.tasks, fields=registry.doc_fields, max_context_chars=fp.max_context_chars,
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
        if T.is_label_task(group):
            out[t] = round(Counter(it.response for it in group).most_common(1)[0][1] / len(group), 4)
        else:
            out[t] = round(sum(1 / len(it.options or ()) for it in group) / len(group), 4)
    return out


@dataclass
class Inputs:
    """Everything every model is scored on: the same documents, items and prompts for each."""

    texts: list[str]
    test_docs: int
    general: list[str]
    general_desc: str | None
    items: list[T.TaskItem]
    files: list[TaskFile]
    file_items: dict[str, list[T.TaskItem]]
    samples: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def _sampled(items: list[T.TaskItem], n: int, seed: int) -> list[T.TaskItem]:
    if len(items) <= n:
        return items
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), n))]


def read_inputs(ctx: StageContext, registry: Registry) -> Inputs:
    from ..modeling.evaluate import sample_texts
    from .finetune import user_files

    p, fp, root = ctx.params.evaluate, ctx.params.finetune, ctx.project.root
    notes: list[str] = []
    all_test = test_texts(ctx.input("split"))
    texts = sample_texts(all_test, p.max_test_docs, p.max_doc_chars, p.seed)
    general, desc = [], None
    if p.general_corpus and (root / p.general_corpus).exists():
        pool, desc = read_general(root, p.general_corpus, ctx.params, registry)
        general = sample_texts(pool, p.max_general_docs, p.max_doc_chars, p.seed)
    if not general:
        notes.append("no general corpus: forgetting (general bits/char) not measured" if not p.general_corpus
                     else f"general corpus {p.general_corpus} not found or empty: forgetting not measured")
    eval_items = ctx.input("finetune") / "tasks/eval.jsonl"
    items = pick_items(T.read_items(eval_items) or held_out_items(ctx.input("split"), fp, registry), p.max_task_items)
    files = [read_task_file(path, task="user_eval") for path in user_files(root, p.eval_files)]
    file_items = {ctx.project.rel(f.path): _sampled(f.items, p.max_items_per_file, p.seed) for f in files}
    for f in files:
        if f.bad:
            notes.append(f"{ctx.project.rel(f.path)}: {len(f.bad)} bad record(s) not scored (see user_eval)")
    held = [{"task": it.task, "prompt": it.prompt, "reference": it.response} for it in pick_items(items, p.held_out_samples)]
    prompts = list(p.sample_prompts) or list(registry.sample_prompts)
    samples = held + [{"task": None, "prompt": s, "reference": None} for s in prompts]
    return Inputs(texts, len(all_test), general, desc if general else None, items, files, file_items, samples, notes)


def score_model(folder: Path, inputs: Inputs, ctx: StageContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """One model's row of the report, and what paired comparisons need (per-item and per-document scores)."""
    from ..modeling import evaluate as E
    from ..modeling.generate import GenerationSettings, generate_one, load_for_inference

    p, fp = ctx.params.evaluate, ctx.params.finetune
    boot = {"samples": p.bootstrap_samples, "confidence": p.confidence, "seed": p.seed}
    model, tok = load_for_inference(folder, p.device)
    row: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for key, texts in (("domain", inputs.texts), ("general", inputs.general)):
        if texts:
            s = E.score_texts(model, tok, texts, batch_size=p.batch_size)
            row.update({f"{key}_bpc": round(s.bpc, 4), f"{key}_bpc_ci": s.bpc_ci(**boot), f"{key}_ppl": round(s.ppl, 4),
                        f"{key}_docs": s.docs, f"{key}_tokens": int(s.tokens.sum()), f"{key}_chars": int(s.chars.sum())})
            raw[key] = s
    if inputs.items:
        res = E.score_items(model, tok, inputs.items, system_prompt=fp.system_prompt, max_free=p.max_free_answer_items,
                            max_option_chars=p.max_option_chars)
        row.update(E.summarize(res, **boot))
        raw["items"] = res
    files: dict[str, Any] = {}
    for rel, items in inputs.file_items.items():
        res = E.score_items(model, tok, items, system_prompt=fp.system_prompt, max_free=len(items),
                            max_new_tokens=p.sample_max_new_tokens)
        files[rel] = file_scores(res, boot)
    if files:
        row["user_eval"] = files
        row["user_eval_items"] = sum(v["items"] for v in files.values())
    gen = GenerationSettings(mode="greedy", max_new_tokens=p.sample_max_new_tokens, repetition_penalty=1.1,
                             stop=list(fp.generation.stop), system_prompt=fp.system_prompt)
    raw["samples"] = [generate_one(model, tok, s["prompt"], gen)["output"] for s in inputs.samples]
    del model
    gc.collect()
    return row, raw


def file_scores(results: list[Any], boot: dict[str, Any]) -> dict[str, Any]:
    """A benchmark file's numbers: accuracy on its choice items, ROUGE-L and exact match on its free answers."""
    from ..modeling.evaluate import bootstrap_ci

    mc = [r.correct for r in results if r.kind == "mc"]
    free = [r for r in results if r.kind == "free"]
    out: dict[str, Any] = {"items": len(results), "choice_items": len(mc), "free_items": len(free)}
    if mc:
        out.update(accuracy=round(sum(mc) / len(mc), 4), accuracy_ci=bootstrap_ci(mc, **boot))
    if free:
        rl = [r.rouge_l or 0.0 for r in free]
        out.update(rouge_l=round(sum(rl) / len(rl), 4), rouge_l_ci=bootstrap_ci(rl, **boot),
                   exact_match=round(sum(r.correct for r in free) / len(free), 4))
    return out


def file_report(f: TaskFile, rel: str, scored: int) -> dict[str, Any]:
    """How a benchmark file was read: its layout(s), items, and bad records by reason with examples."""
    reasons: Counter = Counter(reason.split(":")[0] for _, reason in f.bad)
    return {"container": f.container, "layouts": dict(f.layouts), "items": len(f.items), "scored": scored,
            "bad_records": len(f.bad), "bad_by_reason": dict(reasons),
            "bad_examples": [f"{rel}:{n}: {reason}"[:200] for n, reason in f.bad[:5]]}


def comparisons(raw: dict[str, dict[str, Any]], boot: dict[str, Any]) -> dict[str, Any]:
    """Paired differences on the same items and documents: task accuracy (pooled and per task) and bits/char."""
    from ..modeling import evaluate as E

    out: dict[str, Any] = {}
    for a, b in (("base", "finetuned"), ("base", "pretrained"), ("pretrained", "finetuned")):
        if a not in raw or b not in raw:
            continue
        entry: dict[str, Any] = {}
        if "items" in raw[a] and "items" in raw[b]:
            ra, rb = raw[a]["items"], raw[b]["items"]
            entry = E.paired_difference([r.correct for r in ra], [r.correct for r in rb], [r.task for r in ra], **boot)
        for key in ("domain", "general"):
            if key in raw[a] and key in raw[b]:
                entry[f"{key}_bpc"] = E.paired_ratio_difference(raw[a][key], raw[b][key], **boot)
        out[f"{b} - {a}"] = entry
    return out


def run(ctx: StageContext) -> dict[str, Any]:
    import torch

    from ..modeling.report import render_report

    p, root, out = ctx.params.evaluate, ctx.project.root, ctx.out
    started = time.perf_counter()
    torch.manual_seed(p.seed)
    every = model_dirs(ctx)
    dirs = {name: d for name, d in every.items() if (d / "config.json").exists()}
    if "base" not in dirs:
        raise FileNotFoundError(f"no base model at {every['base']} (run the base_model stage first)")
    registry = load_registry(ctx.params.project.plugins, root)
    inputs = read_inputs(ctx, registry)
    inputs.notes += [f"{name} model missing ({ctx.project.rel(d)}): not evaluated" for name, d in every.items()
                     if name not in dirs]
    boot = {"samples": p.bootstrap_samples, "confidence": p.confidence, "seed": p.seed}
    models: dict[str, dict[str, Any]] = {}
    raw: dict[str, dict[str, Any]] = {}
    for name, folder in dirs.items():
        t0 = time.perf_counter()
        models[name], raw[name] = score_model(folder, inputs, ctx)
        models[name]["seconds"] = round(time.perf_counter() - t0, 1)
        row = models[name]
        ctx.log.info("%s: domain bpc %s %s, general bpc %s %s, task accuracy %s %s (%.0f s)", name, row.get("domain_bpc"),
                     row.get("domain_bpc_ci"), row.get("general_bpc"), row.get("general_bpc_ci"), row.get("task_accuracy"),
                     row.get("task_accuracy_ci"), row["seconds"])
    samples = [{**s, **{name: raw[name]["samples"][i] for name in raw}} for i, s in enumerate(inputs.samples)]
    metrics = _metrics(ctx, inputs, models, comparisons(raw, boot), samples)
    out.mkdir(parents=True, exist_ok=True)
    _write_plots(ctx, models)
    with atomic_path(out / "samples.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    write_text(render_report(metrics, _curves(ctx)), out / "report.html")
    ctx.log.info("report: %s", ctx.project.rel(out / "report.html"))
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics


def _metrics(ctx: StageContext, inputs: Inputs, models: dict[str, Any], compared: dict[str, Any],
             samples: list[dict[str, Any]]) -> dict[str, Any]:
    p = ctx.params.evaluate
    user_eval = {ctx.project.rel(f.path): file_report(f, ctx.project.rel(f.path), len(inputs.file_items[ctx.project.rel(f.path)]))
                 for f in inputs.files}
    for rel, entry in user_eval.items():
        entry["models"] = {name: row.get("user_eval", {}).get(rel) for name, row in models.items()}
    for row in models.values():
        row.pop("user_eval", None)
    return {
        "models": models,
        "comparisons": compared,
        "task_baselines": baselines(inputs.items),
        "confidence": p.confidence,
        "bootstrap_samples": p.bootstrap_samples,
        "domain_docs": len(inputs.texts),
        "domain_docs_available": inputs.test_docs,
        "doc_chars": p.max_doc_chars,
        "general_corpus": inputs.general_desc,
        "general_docs": len(inputs.general),
        "eval_items": len(inputs.items),
        "user_eval": user_eval,
        "user_eval_items": sum(len(v) for v in inputs.file_items.values()),
        "user_eval_bad_records": sum(len(f.bad) for f in inputs.files),
        "note": "; ".join(inputs.notes),
        "samples": samples,
        # the data contract's counts: the sampled test documents, each scored (long ones cut, none skipped)
        "documents_in": len(inputs.texts),
        "documents_out": len(inputs.texts),
        "dropped": 0,
        "quarantined": 0,
        "drops_by_reason": {},
        "headline": {f"{m}_{k}": v.get(k) for m, v in models.items() for k in ("domain_bpc", "general_bpc", "task_accuracy")},
    }


def _curves(ctx: StageContext) -> dict[str, Any]:
    from ..modeling.report import read_curve

    root = ctx.project.root
    return {name: read_curve(root / STAGES[stage].plots[0].path) for name, stage in
            (("pretrain", "pretrain"), ("finetune", "finetune"))}


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
    """The report shows the model gates as the quality gate judged them (quality/suites.py, bounds in gates.*)."""
    from ..modeling.report import render_report

    shown = {**metrics, "gates": {e.name: {"success": e.success, "observed": e.observed, "bound": e.bound,
                                           "description": e.description} for e in gate.expectations}}
    write_text(render_report(shown, _curves(ctx)), ctx.out / "report.html")
