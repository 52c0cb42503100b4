"""Assets of the GPU benchmarks: the example's config, tokenizer and splits (no weights), a randomly initialised
model of the base model's shape, params sections read as plain YAML, and GPU memory counters.

Kept apart from the benchmarks so the device machine needs none of the project's pydantic/Dagster stack.
"""

from __future__ import annotations

import gc
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's package, uninstalled (as on the device machine)

MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "chat_template.jinja", "generation_config.json")
SPLITS = ("train", "validation", "test")
log = logging.getLogger("gpu_train")


def prepare(project: Path, assets: Path) -> None:
    """Copy the small files the benchmark needs (config, tokenizer, splits; no weights) into `assets`."""
    src = project / "data/models/base/model"
    (assets / "model").mkdir(parents=True, exist_ok=True)
    (assets / "splits").mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, assets / "model" / name)
    for name in SPLITS:
        shutil.copy2(project / f"data/splits/{name}.parquet", assets / "splits" / f"{name}.parquet")
    print(f"copied config, tokenizer and splits to {assets}")


def section(path: Path, name: str) -> dict[str, Any]:
    """One section of a params file, read as plain YAML (the benchmark does not need the pydantic schema)."""
    try:
        return dict((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get(name) or {})
    except (OSError, yaml.YAMLError) as exc:
        log.warning("%s: %s; using defaults for %s", path, exc, name)
        return {}


def read_split(assets: Path, name: str, limit: int | None) -> list[dict[str, Any]]:
    path = assets / "splits" / f"{name}.parquet"
    cols = [c for c in ("doc_id", "text", "meta", "lang") if c in pq.read_schema(path).names]
    rows = pq.read_table(path, columns=cols).to_pylist()
    return rows[:limit] if limit else rows


def build_model(assets: Path, smoke: bool, seed: int) -> Any:
    """The base model's architecture from its config.json, randomly initialised (tiny under --smoke)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(assets / "model"))
    if smoke:
        config.update({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16})
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).float()


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None
