"""The evaluation report: one self-contained HTML page (matplotlib PNGs inlined as base64).

Every number on the page is formatted from the same metrics dict that becomes metrics.json, so the page
and `dvc metrics show` cannot disagree.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path
from typing import Any

from .fonts import CSS_FONT_STACK, use_cjk_font

MODELS = ("base", "pretrained", "finetuned")
COLORS = {"base": "#8c8c8c", "pretrained": "#1f77b4", "finetuned": "#d62728"}


def fmt(v: Any, digits: int = 4) -> str:
    """The one number format of the page (tests compare it with metrics.json)."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def read_curve(path: Path | None) -> list[tuple[float, float]]:
    """(step, loss) pairs from a training CSV with 'step' and 'loss' (or 'train_loss') columns."""
    if path is None or not Path(path).exists():
        return []
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            loss = row.get("loss", row.get("train_loss"))
            step = row.get("step", row.get("steps"))
            try:
                out.append((float(step), float(loss)))
            except (TypeError, ValueError):
                continue
    return out


def _bars(metrics: dict[str, Any], keys: list[tuple[str, str]], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_cjk_font()  # Chinese labels as glyphs, not boxes, when a CJK font is installed

    models = [m for m in MODELS if m in metrics["models"]]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], keys, strict=True):
        vals = [metrics["models"][m].get(key) for m in models]
        xs = [i for i, v in enumerate(vals) if v is not None]
        ys = [vals[i] for i in xs]
        err = None
        cis = [metrics["models"][models[i]].get(f"{key}_ci") for i in xs]
        if xs and all(c and None not in c for c in cis):
            err = [[max(0.0, y - c[0]) for y, c in zip(ys, cis, strict=True)],
                   [max(0.0, c[1] - y) for y, c in zip(ys, cis, strict=True)]]
        ax.bar([models[i] for i in xs], ys, color=[COLORS[models[i]] for i in xs], yerr=err, capsize=4)
        for x, y in zip(range(len(xs)), ys, strict=True):
            ax.annotate(f"{y:.3f}", (x, y), ha="center", va="bottom", fontsize=8)
        ax.set_title(label, fontsize=10)
        if not xs:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title, fontsize=11, y=1.03)
    return _png(fig)


def _curves(curves: dict[str, list[tuple[float, float]]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_cjk_font()  # Chinese labels as glyphs, not boxes, when a CJK font is installed

    fig, axes = plt.subplots(1, max(1, len(curves)), figsize=(5 * max(1, len(curves)), 3.2), squeeze=False)
    for ax, (name, pts) in zip(axes[0], curves.items(), strict=False):
        if pts:
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, lw=0.8, alpha=0.5, label="per step")
            k = max(1, len(ys) // 10)  # a moving average: single-block steps are noisy
            if k > 1:
                smooth = [sum(ys[max(0, i - k + 1):i + 1]) / len(ys[max(0, i - k + 1):i + 1]) for i in range(len(ys))]
                ax.plot(xs, smooth, lw=1.8, label=f"mean of {k}")
                ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no curve recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{name} loss", fontsize=10)
        ax.set_xlabel("step")
    return _png(fig)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _ci(ci: Any) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "n/a"


CSS = "body{font-family:" + CSS_FONT_STACK + """;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;
vertical-align:top;font-size:14px}th{background:#f3f3f3}.pass{color:#137333;font-weight:bold}
.fail{color:#c5221f;font-weight:bold}.note{color:#555;font-size:13px}img{max-width:100%}"""


SCORING_NOTE = (
    "<p class='note'>Items come from test documents only. Fixed-label tasks (e.g. branch of law, in force) are scored by "
    "the total log-likelihood of each label; passage tasks offer the reference among three other documents' "
    "answers (article lookup and heading: passages of other laws or documents, same branch first; continuation: "
    "the same law or document), scored on a common prefix by PMI, log P(option | question) &minus; log P(option | empty question), so "
    "short or generic passages gain nothing. \"answers X to N%\" flags a model giving one answer to most "
    "items: its accuracy is then the majority share, not knowledge; \"balanced\" (the mean recall over the true labels) "
    "is 1/#labels for such a model.</p>")


def _headline(metrics: dict[str, Any], models: list[str]) -> str:
    rows = []
    for key, label in [("domain_bpc", "domain bits/char"), ("general_bpc", "general bits/char"),
                       ("domain_ppl", "domain perplexity"), ("general_ppl", "general perplexity"),
                       ("task_accuracy", "task accuracy")]:
        if not any(key in metrics["models"][m] for m in models):
            continue
        rows.append([label, *[fmt(metrics["models"][m].get(key)) for m in models]])
        if any(f"{key}_ci" in metrics["models"][m] for m in models):
            rows.append([f"{label} CI", *[_ci(metrics["models"][m].get(f"{key}_ci")) for m in models]])
    return "<h2>Headline</h2>" + _table(["metric", *models], rows) + (
        f"<p class='note'>Bits per character are comparable across tokenizers; perplexity is per token. Intervals are "
        f"{fmt(metrics.get('confidence'), 2)} percentile bootstrap intervals over {metrics.get('bootstrap_samples')} "
        f"resamples: of the documents for bits per character (domain: {metrics.get('domain_docs')} test documents sampled "
        f"of {metrics.get('domain_docs_available')}; general: {metrics.get('general_docs')} documents of "
        f"{html.escape(str(metrics.get('general_corpus') or 'none'))}; each scored on its first {metrics.get('doc_chars')} "
        f"characters), of the held-out items for accuracy. Overlapping intervals mean the difference may be noise.</p>")


def _gates(metrics: dict[str, Any]) -> str:
    """The gate results when the quality layer put them into the metrics; the stage itself judges nothing."""
    gates = metrics.get("gates") or {}
    if not gates:
        return ""
    ok = all(g.get("success") for g in gates.values())
    verdict = f"<p>Model gates: <span class='{'pass' if ok else 'fail'}'>{'all pass' if ok else 'FAILING'}</span></p>"
    return "<h2>Model gates</h2>" + verdict + _table(
        ["gate", "result", "observed", "bound", "what it checks"],
        [[html.escape(n), f"<span class='{'pass' if g.get('success') else 'fail'}'>{'pass' if g.get('success') else 'FAIL'}</span>",
          fmt(g.get("observed")), fmt(g.get("bound")), html.escape(g.get("description", ""))] for n, g in gates.items()])


def _task_cell(e: dict[str, Any] | None) -> str:
    if not e:
        return "n/a"
    if "balanced_accuracy" in e:  # a label task: balanced accuracy is its headline
        cell = f"balanced {fmt(e['balanced_accuracy'])} {_ci(e.get('balanced_accuracy_ci'))}<br>accuracy {fmt(e['accuracy'])}"
    else:
        cell = f"{fmt(e['accuracy'])} {_ci(e.get('ci'))}"
    cell += f" (n={e['n']})"
    if "rouge_l" in e:
        cell += f"<br>ROUGE-L {fmt(e['rouge_l'])} {_ci(e.get('rouge_l_ci'))}"
    if e.get("top_answer_share", 0) >= 0.5:
        cell += f"<br>answers {html.escape(e['top_answer'])} to {round(e['top_answer_share'] * 100)}%"
    return cell


def _tasks(metrics: dict[str, Any], models: list[str]) -> str:
    names = sorted({t for m in models for t in metrics["models"][m].get("tasks", {})})
    if not names:
        return ""
    rows = [[html.escape(t), *[_task_cell(metrics["models"][m].get("tasks", {}).get(t)) for m in models],
             fmt(metrics.get("task_baselines", {}).get(t))] for t in names]
    return "<h2>Per task</h2>" + _table(["task", *models, "majority / chance"], rows) + SCORING_NOTE


def _comparisons(metrics: dict[str, Any]) -> str:
    comps = metrics.get("comparisons") or {}
    if not comps:
        return ""
    rows = [[html.escape(k), *[f"{fmt(v[key]['diff'])} {_ci(v[key].get('ci'))}" if key in v else "n/a"
                               for key in ("domain_bpc", "general_bpc")],
             f"{fmt(v['diff'])} {_ci(v.get('ci'))}" if "diff" in v else "n/a"] for k, v in comps.items()]
    out = "<h2>Paired differences (same documents, same items)</h2>" + _table(
        ["comparison", "domain bits/char", "general bits/char", "task accuracy"], rows)
    by_task = {k: v["tasks"] for k, v in comps.items() if v.get("tasks")}
    if by_task:
        tasks = sorted({t for v in by_task.values() for t in v})
        out += "<h3>Task accuracy per task</h3>" + _table(
            ["task", *map(html.escape, by_task)],
            [[html.escape(t), *[f"{fmt(v[t]['diff'])} {_ci(v[t]['ci'])}" if t in v else "n/a" for v in by_task.values()]]
             for t in tasks])
    return out


def _user_eval(metrics: dict[str, Any], models: list[str]) -> str:
    files = metrics.get("user_eval") or {}
    if not files:
        return ""
    rows = []
    for rel, f in files.items():
        how = (f"{html.escape(f['container'])}; {', '.join(f'{html.escape(k)} {v}' for k, v in f['layouts'].items()) or '-'}; "
               f"{f['scored']} of {f['items']} items scored; {f['bad_records']} bad records")
        if f["bad_by_reason"]:
            how += " (" + ", ".join(f"{html.escape(k)} {v}" for k, v in f["bad_by_reason"].items()) + ")"
        cells = []
        for m in models:
            r = (f.get("models") or {}).get(m) or {}
            parts = []
            if "accuracy" in r:
                parts.append(f"accuracy {fmt(r['accuracy'])} {_ci(r.get('accuracy_ci'))} (n={r['choice_items']})")
            if "rouge_l" in r:
                parts.append(f"ROUGE-L {fmt(r['rouge_l'])} {_ci(r.get('rouge_l_ci'))}, exact {fmt(r['exact_match'])} "
                             f"(n={r['free_items']})")
            cells.append("<br>".join(parts) or "n/a")
        rows.append([html.escape(rel), how, *cells])
    examples = [html.escape(e) for f in files.values() for e in f.get("bad_examples", [])]
    note = ("<p class='note'>Bad records (first of each file): " + "; ".join(examples) + "</p>") if examples else ""
    return "<h2>Your benchmarks</h2>" + _table(["file", "read as", *models], rows) + note


def _samples(metrics: dict[str, Any], models: list[str]) -> str:
    samples = metrics.get("samples", [])
    if not samples:
        return ""
    rows = [[html.escape(s.get("task") or "prompt"), html.escape(s["prompt"]), html.escape(s.get("reference") or "-"),
             *[html.escape(s.get(m, "") or "") for m in models]] for s in samples]
    return ("<h2>Sample answers</h2><p class='note'>Held-out items (never trained on) with their reference, then the "
            "configured prompts; greedy decoding.</p>" + _table(["task", "prompt", "reference", *models], rows))


def render_report(metrics: dict[str, Any], curves: dict[str, list[tuple[float, float]]]) -> str:
    """The whole page, from the metrics dict (as written to metrics.json) and the training loss curves."""
    models = [m for m in MODELS if m in metrics["models"]]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Evaluation report</title><style>{CSS}</style>"
             "</head><body><h1>Evaluation report: base vs pretrained vs fine-tuned</h1>"]
    if metrics.get("note"):
        parts.append(f"<p class='note'>{html.escape(metrics['note'])}</p>")
    parts += [_headline(metrics, models), _gates(metrics), "<h2>Perplexity and accuracy</h2>",
              _bars(metrics, [("domain_bpc", "domain bits/char (lower is better)"),
                              ("general_bpc", "general bits/char (lower is better)")], "Language modelling (with bootstrap CI)"),
              _bars(metrics, [("task_accuracy", "held-out task accuracy")], "Tasks (with bootstrap CI)"),
              _tasks(metrics, models), _comparisons(metrics), _user_eval(metrics, models),
              "<h2>Training loss</h2>" + _curves(curves), _samples(metrics, models), "</body></html>"]
    return "\n".join(p for p in parts if p)
