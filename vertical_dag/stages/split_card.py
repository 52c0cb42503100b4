"""The dataset card of the splits folder (README.md), so `datasets.load_dataset("data/splits")` loads it.

Its `configs:` metadata names the data file of each non-empty split, which is also what keeps the stage's
own files beside them (splits.json, .state.json, ledger/) out of the dataset. The body gives the counts per
split and source and what decontamination removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from ..records import atomic_path
from ..text.splitting import SPLITS


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "1M<n<10M"


def card_text(name: str, summary: dict[str, Any], decon: dict[str, Any], documents_in: int) -> str:
    splits = summary["splits"]
    present = [s for s in SPLITS if splits[s]["documents"]]
    data = DatasetCardData(
        pretty_name=f"{name} splits",
        size_categories=[_size_category(sum(splits[s]["documents"] for s in SPLITS))],
        task_categories=["text-generation"],
        configs=[{"config_name": "default", "data_files": [{"split": s, "path": f"{s}.parquet"} for s in present]}],
    )
    rows = "\n".join(f"| {s} | {splits[s]['documents']} | {splits[s]['chars']} | {splits[s]['fraction']:.4f} |"
                     for s in SPLITS)
    sources = "\n".join(f"| {src} | " + " | ".join(str(per[s]["documents"]) for s in SPLITS) + " |"
                        for src, per in summary["by_source"].items())
    settings = decon.get("settings", {})
    body = f"""# {name}: train / validation / test

Written by the `split` stage of vertical_dag. Load with `datasets.load_dataset("<this folder>")`.

Documents are assigned by a hash of their group (`group_by: {summary.get('group_by')}`), so a template family
never spans two splits and adding data never moves an old document.

| split | documents | characters | fraction |
|---|---|---|---|
{rows}

## Sources

| source | {' | '.join(SPLITS)} |
|---|{'---|' * len(SPLITS)}
{sources}

## What was removed

{documents_in} documents came in. Decontamination (preset `{settings.get('preset')}`: word {settings.get('word_ngram')}-grams,
character {settings.get('char_ngram')}-grams for CJK; n-grams in more than {settings.get('max_ngram_families')} documents are
boilerplate and do not count) dropped {decon['dropped']} documents mostly covered by evaluation text, cut shared
spans ({decon['chars_cut']} characters) out of {decon['cut']} and flagged {decon['flagged']}. Every removal has a row in
`ledger/split.parquet` (`vertical-dag explain DOC_ID`).
"""
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def write_card(out: Path, name: str, summary: dict[str, Any], decon: dict[str, Any], documents_in: int) -> None:
    card = DatasetCard(card_text(name, summary, decon, documents_in))
    with atomic_path(out / "README.md") as tmp:
        card.save(tmp)
