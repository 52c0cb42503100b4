"""The model card (README.md) of every model folder: base, pretrained and fine-tuned.

Written with huggingface_hub's ModelCard / ModelCardData, so the front matter is what the Hub and its tools
read: license, language, base_model (a hub id), datasets, pipeline_tag, model-index (the evaluation results
known when the model was written) and a `vertical_dag` lineage block (dataset hashes, base model, git commit
and the dvc.lock the run started from). The body repeats it for people.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

PIPELINE_TAG = "text-generation"
QUANT_SUFFIX = re.compile(r"[.-](?:I?Q\d\w*|F16|F32|BF16)$", re.IGNORECASE)
MIN_LANGUAGE_SHARE = 0.05  # a language on fewer train documents than this is not named on the card
TAGS = {"base": ["vertical-dag"], "pretrained": ["vertical-dag", "continued-pretraining"],
        "finetuned": ["vertical-dag", "fine-tuned"]}
INTROS = {
    "base": "The base model as imported into the project, unchanged: the starting point of continued pretraining.",
    "pretrained": "Continued (domain-adaptive) pretraining of the base model below on the project's train split.",
    "finetuned": "Supervised fine-tuning of the domain-pretrained model on the project's task examples.",
}


def _table(rows: dict[str, Any]) -> list[str]:
    out = ["| key | value |", "|---|---|"]
    for k, v in rows.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        out.append(f"| {k} | {str(v).replace('|', '/')} |")
    return out


def _front_matter(path: Path) -> dict[str, Any]:
    """The YAML front matter of an existing model card (e.g. the one a downloaded base model came with)."""
    if not path.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(path).data.to_dict()
    except Exception:  # a card that is not one: no facts from it
        return {}


def hub_id(base: dict[str, Any], base_dir: Path | None = None) -> str | None:
    """The base model's hub id: the source itself when it is one, else what the local folder names."""
    source = str(base.get("source") or "")
    if source.count("/") == 1 and not Path(source).exists() and not source.startswith((".", "data/")):
        return source
    if base.get("hub_id"):
        return str(base["hub_id"])
    for folder in [base_dir, Path(source) if source else None]:
        if folder is None or not folder.is_dir():
            continue
        front = _front_matter(folder / "README.md")
        for key in ("base_model", "model_name"):
            value = front.get(key)
            value = value[0] if isinstance(value, list) and value else value
            if isinstance(value, str) and "/" in value:
                return value
        try:
            name = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_name_or_path", "")
        except (OSError, json.JSONDecodeError):
            name = ""
        if isinstance(name, str) and name.count("/") == 1 and not Path(name).exists():
            return name
    return None


def base_license(base_dir: Path | None) -> str:
    """The license the base model's own card declares ('other' when none does: the user must say)."""
    front = _front_matter(base_dir / "README.md") if base_dir else {}
    return str(front.get("license") or "other")


def gguf_facts(path: Path) -> dict[str, str]:
    """License and hub id a GGUF file's own metadata declares (general.license, general.base_model.0.*)."""
    from gguf import GGUFReader

    def text(reader: Any, key: str) -> str | None:
        field = reader.fields.get(key)
        if field is None or not field.data:
            return None
        return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")

    try:
        reader = GGUFReader(str(path))
    except Exception:  # unreadable metadata: no facts, the card says 'other' / none known
        return {}
    facts = {"license": text(reader, "general.license"), "languages": text(reader, "general.languages")}
    org = text(reader, "general.base_model.0.organization") or text(reader, "general.organization")
    name = text(reader, "general.base_model.0.name")
    url = text(reader, "general.base_model.0.repo_url") or text(reader, "general.source.huggingface.repository")
    if url and url.rstrip("/").count("/") >= 2:
        facts["hub_id"] = "/".join(url.rstrip("/").split("/")[-2:])
    elif org:  # GGUF files are named after their model: "<model>.<quantisation>.gguf"
        model = QUANT_SUFFIX.sub("", path.name.removesuffix(".gguf")) or name
        facts["hub_id"] = f"{org}/{model}".replace(" ", "-") if model else None
    return {k: v for k, v in facts.items() if v}


def base_card(record: dict[str, Any], source_path: Path | None, root: Path) -> str:
    """The card of the imported base model; license and hub id from the source's own card or GGUF metadata."""
    facts: dict[str, Any] = {}
    if source_path is not None and source_path.is_file() and source_path.suffix == ".gguf":
        facts = gguf_facts(source_path)
    elif source_path is not None and source_path.is_dir():
        front = _front_matter(source_path / "README.md")
        facts = {"license": front.get("license"), "hub_id": hub_id({"source": str(source_path)})}
    base = {k: record.get(k) for k in ("source", "kind", "sha256", "architecture", "parameters", "is_instruct")}
    base["hub_id"] = facts.get("hub_id")
    return model_card(title=f"{Path(str(record.get('source', 'base'))).name} (imported)", role="base", root=root,
                      base={**base, "warnings": record.get("warnings", [])}, license=facts.get("license"),
                      languages=[facts["languages"]] if facts.get("languages") else None,
                      data={"weights sha256": record.get("output_sha256", "")}, params={}, metrics={},
                      # the source's folder, never the model folder being replaced (its old card may be stale)
                      base_dir=(source_path if source_path.is_dir() else source_path.parent) if source_path else root / ".none")


def finetuned_card(root: Path, init_dir: Path, tasks_dir: Path, metrics: dict[str, Any],
                   params: dict[str, Any]) -> str:
    """The fine-tuned model's card: lineage is the model it started from and the task files it saw."""
    from ..records import file_sha256

    base_dir = root / "data/models/base/model"
    front = _front_matter(base_dir / "README.md").get("vertical_dag", {})
    base = dict(front.get("base_model") or {})
    base["started_from"] = str(init_dir.relative_to(root)) if init_dir.is_relative_to(root) else str(init_dir)
    data = {f"tasks/{f.name}": file_sha256(f) for f in sorted(tasks_dir.glob("*.jsonl"))}
    splits = root / "data/splits"
    return model_card(title=f"{root.name}: fine-tuned", role="finetuned", root=root, base=base, data=data,
                      params=params, metrics={k: v for k, v in metrics.items() if not isinstance(v, dict | list)},
                      base_dir=base_dir, languages=train_languages(splits), dataset="data/splits")


def train_languages(splits_dir: Path, allowed: list[str] | None = None) -> list[str]:
    """Languages of the train split (its `lang` column), else the allowed languages of the normalize stage."""
    train = splits_dir / "train.parquet"
    if train.is_file():
        import pyarrow.parquet as pq

        if "lang" in pq.read_schema(train).names:
            langs = Counter(v for v in pq.read_table(train, columns=["lang"]).column("lang").to_pylist() if v)
            total = sum(langs.values())
            named = [lang for lang, n in langs.most_common() if lang != "und" and n >= MIN_LANGUAGE_SHARE * total]
            if named:
                return named
    return list(allowed or [])


def revision(root: Path) -> dict[str, Any]:
    """Which code and which pipeline state a model came from: git commit (and whether it was dirty) and dvc.lock."""
    out: dict[str, Any] = {}
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    if git.returncode == 0:
        out["git_commit"] = git.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True)
        out["git_dirty"] = bool(dirty.stdout.strip())
    lock = root / "dvc.lock"
    if lock.is_file():
        out["dvc_lock_sha256"] = hashlib.sha256(lock.read_bytes()).hexdigest()
    return out


def eval_results(metrics: dict[str, Any], dataset: str) -> list[Any]:
    """model-index entries from the stage's own held-out evaluation (perplexity, loss on the validation split)."""
    from huggingface_hub import EvalResult

    named = {"val_perplexity_final": ("perplexity", "validation perplexity"),
             "val_perplexity_base": ("perplexity", "validation perplexity (before training)"),
             "val_loss": ("loss", "validation loss"),
             "perplexity": ("perplexity", "validation perplexity")}
    results = []
    for key, (metric_type, metric_name) in named.items():
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            results.append(EvalResult(task_type=PIPELINE_TAG, task_name="Language modeling", dataset_type=dataset,
                                      dataset_name=dataset, dataset_split="validation", metric_type=metric_type,
                                      metric_name=metric_name, metric_value=float(value)))
    return results


def model_card(*, title: str, base: dict[str, Any], data: dict[str, Any], params: dict[str, Any],
               metrics: dict[str, Any], gates: dict[str, Any] | None = None, notes: list[str] | None = None,
               role: str = "pretrained", root: Path | None = None, base_dir: Path | None = None,
               languages: list[str] | None = None, dataset: str = "data/splits", license: str | None = None) -> str:
    """The card's text: front matter the Hub reads, then the same facts (and the quality gates) for people.

    `data` maps a dataset name to its hash (the lineage); `base_dir` is the imported base model folder
    (its own card gives the license and hub id); `root` the project folder (git / dvc.lock revision).
    """
    from huggingface_hub import ModelCard, ModelCardData

    root = root or Path.cwd()
    base_dir = base_dir if base_dir is not None else root / "data/models/base/model"
    base_id = hub_id(base, base_dir)
    lineage = {"role": role, "base_model": {k: v for k, v in base.items() if k != "warnings"},
               "datasets": data, **revision(root)}
    card_data = ModelCardData(
        license=license or base_license(base_dir), language=languages or None, library_name="transformers",
        base_model=base_id, datasets=[dataset] if role != "base" else None, pipeline_tag=PIPELINE_TAG, tags=TAGS.get(role, ["vertical-dag"]),
        model_name=title, eval_results=eval_results(metrics, dataset) or None, vertical_dag=lineage,
    )
    if base_id and role != "base":
        card_data.base_model_relation = "finetune"
    lines = [f"# {title}", "", INTROS.get(role, ""), ""]
    lines += ["## Base model", "", *_table({"hub id": base_id or "(none known)",
                                           **{k: v for k, v in base.items() if k not in ("warnings", "hub_id")}}), ""]
    lines += [f"> warning: {w}\n" for w in base.get("warnings", [])]
    lines += ["## Data", "", *_table(data), ""]
    lines += ["## Revision", "", *_table(revision(root)), ""]
    if params:
        lines += ["## Training parameters", "", *_table(params), ""]
    lines += ["## Metrics", "", *_table({k: v for k, v in metrics.items() if not isinstance(v, dict | list)}), ""]
    lines += ["## Quality gates", ""]
    for stage, g in (gates or {}).items():
        lines.append(f"- `{stage}`: {'passed' if g.get('success') else 'FAILED'}"
                     + "".join(f"; {e['name']}={'ok' if e['success'] else 'FAIL'}" for e in g.get("expectations", [])))
    if not gates:
        lines.append("- none recorded")
    lines.append("")
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    # the body is not a Jinja template (metrics may hold braces): the card is assembled, then parsed back
    return str(ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def write_model_card(model_dir: Path, **kwargs: Any) -> Path:
    """model_card(...) written as model_dir/README.md (atomically)."""
    from ..records import write_text

    path = model_dir / "README.md"
    write_text(model_card(**kwargs), path)
    return path
