"""Stage base_model: import the starting model once into data/models/base/model (safetensors + tokenizer).

The source (local HF folder, GGUF file, or hub id) and its hash go to data/models/base/source.json. A rerun
with the same source and settings is a no-op; a changed source re-imports.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..modeling.card import base_card
from ..modeling.load import detect_kind, folder_weights_sha256, import_model
from ..records import file_sha256, read_json, write_json, write_text
from .context import StageContext


def _source_hash(kind: str, path: Path | None) -> str | None:
    if kind == "gguf" and path is not None:
        return file_sha256(path)
    if kind == "hf_folder" and path is not None:
        return folder_weights_sha256(path)
    return None  # hub: the revision pins it


def run(ctx: StageContext) -> dict[str, Any]:
    p = ctx.params.base_model
    root = ctx.project.root
    model_dir = ctx.out / "model"
    record_path = ctx.out / "source.json"
    started = time.perf_counter()
    kind, path = detect_kind(p.source, p.gguf_file, root)
    settings = {"source": p.source, "gguf_file": p.gguf_file, "revision": p.revision, "dtype": p.dtype,
                "trust_remote_code": p.trust_remote_code}
    previous = read_json(record_path)
    src_hash = _source_hash(kind, path)
    weights = model_dir / "model.safetensors"
    if (previous and previous.get("settings") == settings and (src_hash is None or previous.get("sha256") == src_hash)
            and weights.exists() and file_sha256(weights) == previous.get("output_sha256")):
        ctx.log.info("base model already imported from %s (sha256 %s); nothing to do", previous["source"], previous["sha256"][:12])
        record, imported = previous, False
        for w in record.get("warnings", []):  # a fresh import has logged them already
            ctx.log.warning(w)
    else:
        if previous:
            ctx.log.info("base model source or settings changed: re-importing")
        info = import_model(p.source, model_dir, gguf_file=p.gguf_file, root=root, trust_remote_code=p.trust_remote_code,
                            dtype=p.dtype, revision=p.revision)
        record = {**info.to_json(), "source": ctx.project.rel(Path(info.source)) if info.kind != "hub" else info.source,
                  "settings": settings, "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(record, record_path)
        write_text(base_card(record, path, root), model_dir / "README.md")
        imported = True
    return {
        "source": record["source"],
        "kind": record["kind"],
        "sha256": record["sha256"],
        "output_sha256": record["output_sha256"],
        "objective": record["objective"],
        "architecture": record["architecture"],
        "parameters": record["parameters"],
        "vocab_size": record["vocab_size"],
        "dtype": record["dtype"],
        "is_instruct": record["is_instruct"],
        "warnings": record.get("warnings", []),
        "imported": imported,
        "seconds": round(time.perf_counter() - started, 3),
    }
