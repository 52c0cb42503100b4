"""Stage base_model: import the starting model once into data/models/base/model (safetensors + tokenizer).

The source (local HF folder, GGUF file, or hub id) and its hash go to data/models/base/source.json. DVC
re-runs the stage when the source's files (data/inputs/base_model.json) or the settings change.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..modeling.card import base_card
from ..modeling.load import detect_kind, import_model
from ..records import write_json, write_text
from .context import StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    """Import the model (DVC skips this stage when neither the source nor the settings changed)."""
    p = ctx.params.base_model
    root = ctx.project.root
    started = time.perf_counter()
    _, path = detect_kind(p.source, p.gguf_file, root)  # a source that is none of the three fails here, clearly
    settings = {"source": p.source, "gguf_file": p.gguf_file, "revision": p.revision, "dtype": p.dtype,
                "trust_remote_code": p.trust_remote_code}
    info = import_model(p.source, ctx.out / "model", gguf_file=p.gguf_file, root=root,
                        trust_remote_code=p.trust_remote_code, dtype=p.dtype, revision=p.revision)
    record = {**info.to_json(), "source": ctx.project.rel(Path(info.source)) if info.kind != "hub" else info.source,
              "settings": settings, "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(record, ctx.out / "source.json")
    write_text(base_card(record, path, root), ctx.out / "model" / "README.md")
    keys = ("source", "kind", "sha256", "output_sha256", "architecture", "parameters", "vocab_size", "dtype",
            "is_instruct")
    return {**{k: record[k] for k in keys}, "warnings": record.get("warnings", []),
            "seconds": round(time.perf_counter() - started, 3)}
