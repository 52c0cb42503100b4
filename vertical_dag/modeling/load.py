"""Import a starting model once into a plain safetensors checkpoint + tokenizer, and load such folders back.

Sources: a local Hugging Face folder, a GGUF file (dequantised; transformers refuses to save a GGUF-loaded
model, so a plain model is rebuilt from its config and given the state dict), or a hub id when online.
Remote code stays off unless asked for; only safetensors weights are read and written. Every stage after
import (pretraining, fine-tuning, generation, evaluation) is causal, so encoder-only models are refused here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..records import file_sha256

log = logging.getLogger("vertical_dag.modeling.load")

SourceKind = Literal["gguf", "hf_folder", "hub"]

# Encoder-only families: they cannot generate, so they have no place in a causal pipeline.
ENCODER_MODEL_TYPES = {
    "bert", "roberta", "xlm-roberta", "distilbert", "albert", "camembert", "deberta", "deberta-v2",
    "electra", "modernbert", "mpnet", "ernie", "nomic_bert",
}
INSTRUCT_MARKERS = ("instruct", "chat", "-it", "_it", "sft", "dpo", "rlhf")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelImportError(RuntimeError):
    pass


@dataclass
class ImportedModel:
    source: str
    kind: SourceKind
    sha256: str  # of the GGUF file, or of the folder's weight files (sorted, concatenated hashes), or the hub revision
    model_type: str
    architecture: str
    parameters: int
    vocab_size: int
    dtype: str
    is_instruct: bool
    warnings: list[str] = field(default_factory=list)
    output_sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def pick_device(name: str) -> torch.device:
    """auto | cpu | cuda as a torch device; under torchrun, cuda is this rank's card."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


def folder_weights_sha256(folder: Path) -> str:
    """One hash for a model folder: the sha256 of its weight and tokenizer files, in name order."""
    h = hashlib.sha256()
    names = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in {".safetensors", ".json", ".model", ".gguf"})
    for p in names:
        h.update(p.name.encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def readable(folder: Path) -> None:
    """save_pretrained writes weights owner-only (0600); model folders are shared outputs, so make them 0644."""
    for p in Path(folder).iterdir():
        if p.is_file():
            p.chmod(0o644)


def detect_kind(source: str, gguf_file: str | None, root: Path | None = None) -> tuple[SourceKind, Path | None]:
    """Decide what `source` is: a GGUF file (or folder + gguf_file), a local HF folder, or a hub id."""
    path = Path(source)
    if root is not None and not path.is_absolute():
        path = root / path
    if gguf_file or path.suffix == ".gguf":
        gguf = path / gguf_file if gguf_file else path
        if not gguf.is_file():
            raise ModelImportError(f"GGUF file not found: {gguf} (for the example: `vertical-dag example fetch`)")
        return "gguf", gguf
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelImportError(f"{path} is a folder but has no config.json: not a Hugging Face model folder")
        return "hf_folder", path
    if path.exists() or source.startswith((".", "/")) or source.count("/") > 1:
        raise ModelImportError(f"model source {source!r} is neither a GGUF file, a model folder, nor a hub id")
    return "hub", None


def instruct_warning(name: str, tokenizer: Any) -> str | None:
    """Continued pretraining of an instruct/chat model erodes its chat behaviour; say so up front."""
    lowered = name.lower()
    marker = next((m for m in INSTRUCT_MARKERS if m in lowered), None)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if marker or has_template:
        why = f"name contains {marker!r}" if marker else "its tokenizer has a chat template"
        return (f"base model looks like an instruct/chat model ({why}): continued pretraining on raw text will "
                "weaken its instruction following; prefer the base (non-instruct) variant when one exists, "
                "or rely on the fine-tuning stage to restore it")
    return None


def require_causal(config: Any, source: str) -> None:
    """Refuse an encoder-only model (BERT and kin) with a message that says why, before any weights load."""
    model_type = getattr(config, "model_type", "")
    if model_type in ENCODER_MODEL_TYPES:
        raise ModelImportError(f"{source}: {model_type!r} is an encoder-only model; pretraining, fine-tuning, "
                               "generation and evaluation here are causal (decoder) LMs only: pick a decoder model")


def _plain_copy(model: Any, dtype: torch.dtype) -> Any:
    """A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config and load the weights."""
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype  # recorded in config.json
    cls = type(model)
    plain = cls(config)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied embeddings
    if missing or unexpected:
        raise ModelImportError(f"GGUF weights do not match the rebuilt model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    return plain.to(dtype)


def import_model(source: str, out_dir: Path, *, gguf_file: str | None = None, root: Path | None = None,
                 trust_remote_code: bool = False, dtype: str = "float32", revision: str | None = None) -> ImportedModel:
    """Load the starting model from `source` and write a plain HF folder (safetensors + tokenizer) to out_dir."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kind, path = detect_kind(source, gguf_file, root)
    torch_dtype = DTYPES[dtype]
    if kind == "gguf":
        assert path is not None
        log.info("importing GGUF %s (dequantising; this takes a while on CPU)", path)
        src_hash = file_sha256(path)
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        require_causal(config, str(path))
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        model = _plain_copy(model, torch_dtype)
        name = path.name
    else:
        target = str(path) if kind == "hf_folder" else source
        if kind == "hub" and os.environ.get("HF_HUB_OFFLINE") == "1":
            raise ModelImportError(f"{source!r} looks like a hub id but HF_HUB_OFFLINE=1; point base_model.source at a local folder or GGUF")
        common = {"trust_remote_code": trust_remote_code, "revision": revision} if kind == "hub" else {"trust_remote_code": trust_remote_code}
        config = AutoConfig.from_pretrained(target, **common)
        require_causal(config, target)
        tokenizer = AutoTokenizer.from_pretrained(target, **common)
        try:
            model = AutoModelForCausalLM.from_pretrained(target, dtype=torch_dtype, use_safetensors=True, **common)
        except OSError as exc:
            raise ModelImportError(f"{target}: no safetensors weights ({exc}); pickled .bin weights are not loaded") from None
        src_hash = folder_weights_sha256(path) if kind == "hf_folder" else (getattr(config, "_commit_hash", None) or "")
        name = source
    warnings = [w for w in [instruct_warning(name, tokenizer)] if w]
    for w in warnings:
        log.warning(w)
    if tokenizer.eos_token_id is None:
        raise ModelImportError("the tokenizer has no EOS token: documents could not be separated when packing")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    readable(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return ImportedModel(
        source=source if kind == "hub" else str(path),
        kind=kind,
        sha256=src_hash,
        model_type=config.model_type,
        architecture=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        vocab_size=int(getattr(model.config, "vocab_size", 0) or len(tokenizer)),
        dtype=dtype,
        is_instruct=bool(warnings),
        warnings=warnings,
        output_sha256=file_sha256(out_dir / "model.safetensors") if (out_dir / "model.safetensors").exists() else "",
    )


def load_model_folder(folder: Path | str, *, dtype: torch.dtype = torch.float32,
                      trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load (causal model, tokenizer) from a folder written by import_model or a training stage (safetensors only)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = str(folder)
    require_causal(AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code), folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    return model, tokenizer


def write_model_folder(model: Any, tokenizer: Any, out_dir: Path, card: str | None = None) -> None:
    """A standalone HF folder (safetensors weights, tokenizer with its chat template, optional README.md model
    card) that later stages load with from_pretrained; written beside and renamed, so it is never half there."""
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to("cpu").save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if card is not None:
        (tmp / "README.md").write_text(card, encoding="utf-8")
    readable(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
