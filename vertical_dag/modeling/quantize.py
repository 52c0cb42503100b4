"""An int8 copy of a causal LM for CPU inference: weights stored as int8 + per-channel scales in safetensors.

Every Linear layer (the output head too) and the token embedding are quantized per output channel
(per row), symmetrically: w ~= q * scale with q in [-127, 127]. Norms and biases stay float32. The folder
holds config.json, the tokenizer, `model.int8.safetensors` and `quantization.json`; no pickles.

Two kernels run the stored weights (the manifest names the default; load_int8 can override it):
- "weight_only": the Linear weights dequantized to float32 at load: exactly the int8 weights' quality,
  float32 speed; the embedding stays int8 in memory.
- "dynamic": torch's dynamic int8 Linear (torch.ao; activations quantized per tensor on the fly).
  Faster on CPU, but a language model's activation outliers make per-tensor activation quantization
  lossy: the export stage measures both, so the choice is made on numbers.
Tied input/output embeddings are stored once.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

FORMAT = "vertical_dag-int8"
WEIGHTS = "model.int8.safetensors"
MANIFEST = "quantization.json"
KERNELS = ("weight_only", "dynamic")
log = logging.getLogger("vertical_dag.modeling.quantize")


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 q, float32 scale per row) with w ~= q * scale[:, None]."""
    w = w.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def is_int8_folder(folder: Path | str) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def save_int8(model: Any, tokenizer: Any, out_dir: Path, kernel: str = "weight_only") -> dict[str, Any]:
    """Write the int8 folder; returns the manifest (what was quantized, default kernel, bytes before/after)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel {kernel!r}: one of {KERNELS}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    names = {id(m): n for n, m in model.named_modules()}
    tensors: dict[str, torch.Tensor] = {}
    quantized: list[str] = []
    done: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Embedding) and not (tied and module is head):
            q, scale = quantize_rows(module.weight)
            tensors[f"{name}.weight"], tensors[f"{name}.weight_scale"] = q, scale
            quantized.append(name)
            done.add(f"{name}.weight")
    for key, value in model.state_dict().items():
        if key not in done and not (tied and key == f"{names[id(head)]}.weight"):
            tensors[key] = value.detach().float().contiguous()
    save_file(tensors, str(out_dir / WEIGHTS), metadata={"format": FORMAT})
    model.config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    full = sum(p.numel() * p.element_size() for p in model.state_dict().values()
               if not (tied and p is head.weight))
    manifest = {"format": FORMAT, "scheme": "int8 symmetric, per output channel", "kernel": kernel, "quantized": quantized,
                "embedding": names[id(emb)], "tied_output": tied,
                "float32_bytes": int(full), "file_bytes": (out_dir / WEIGHTS).stat().st_size}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    for p in out_dir.iterdir():
        p.chmod(0o644)
    return manifest


class Int8Embedding(torch.nn.Module):
    def __init__(self, q: torch.Tensor, scale: torch.Tensor, padding_idx: int | None = None):
        super().__init__()
        self.register_buffer("q", q)
        self.register_buffer("scale", scale)
        self.padding_idx = padding_idx

    @property
    def weight(self) -> torch.Tensor:  # what generic code (tying, resizing checks) reads
        return self.q.float() * self.scale[:, None]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.q).float() * self.scale[ids][..., None]


def dequantized_linear(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Module:
    out_f, in_f = q.shape
    lin = torch.nn.Linear(in_f, out_f, bias=bias is not None, device="cpu")
    with torch.no_grad():
        lin.weight.copy_(q.float() * scale[:, None])
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def int8_linear(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, kernel: str = "dynamic") -> torch.nn.Module:
    """A dynamic-int8 Linear holding exactly (q, scale), or the dequantized float32 Linear ("weight_only",
    and wherever torch has no int8 kernels)."""
    out_f, in_f = q.shape
    if kernel == "weight_only":
        return dequantized_linear(q, scale, bias)
    try:
        from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch marks quantized tensors as deprecated; they still run
            layer = DynamicInt8Linear(in_f, out_f, bias_=bias is not None, dtype=torch.qint8)
            qw = torch._make_per_channel_quantized_tensor(q, scale.double(), torch.zeros(out_f, dtype=torch.long), 0)
            layer.set_weight_bias(qw, bias)
            layer(torch.zeros(1, in_f))  # fail here, not mid-request, when no int8 engine is there
        return layer
    except (ImportError, RuntimeError, AttributeError) as exc:
        log.warning("no int8 CPU kernels (%s): running dequantized float32 weights", exc)
        return dequantized_linear(q, scale, bias)


def _set(model: Any, name: str, module: torch.nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def load_int8(folder: Path | str, kernel: str | None = None) -> tuple[Any, Any]:
    """(model on CPU in eval mode, tokenizer) from a folder written by save_int8; `kernel` overrides the
    manifest's default ("weight_only" or "dynamic")."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{folder / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    kernel = kernel or manifest.get("kernel", "weight_only")
    if kernel not in KERNELS:
        raise ValueError(f"kernel {kernel!r}: one of {KERNELS}")
    config = AutoConfig.from_pretrained(str(folder))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    tensors = load_file(str(folder / WEIGHTS))
    quantized = set(manifest["quantized"])
    plain = {k: v for k, v in tensors.items()
             if not k.endswith(".weight_scale") and k.removesuffix(".weight") not in quantized}
    model.load_state_dict(plain, strict=False, assign=True)
    for name in quantized:
        q, scale = tensors[f"{name}.weight"], tensors[f"{name}.weight_scale"]
        old = model.get_submodule(name)
        if isinstance(old, torch.nn.Embedding):
            _set(model, name, Int8Embedding(q, scale, old.padding_idx))
        else:
            bias = tensors.get(f"{name}.bias")
            _set(model, name, int8_linear(q, scale, bias, kernel))
    if manifest.get("tied_output"):
        head_name = next(n for n, m in model.named_modules() if m is model.get_output_embeddings())
        emb = model.get_submodule(manifest["embedding"])
        _set(model, head_name, int8_linear(emb.q, emb.scale, None, kernel))
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        model = _materialize_buffers(model, config, leftovers)
    model.eval()
    return model, AutoTokenizer.from_pretrained(str(folder))


def _materialize_buffers(model: Any, config: Any, names: list[str]) -> Any:
    """Buffers computed at init (rotary inverse frequencies) are in no state dict: rebuild their modules on
    CPU from the config; any other missing tensor is an error."""
    owners = {name.rpartition(".")[0] for name in names}
    for owner_name in sorted(owners):
        owner = model.get_submodule(owner_name)
        try:
            fresh = type(owner)(config=config)
        except TypeError:
            raise ValueError(f"int8 folder lacks weights for {owner_name} ({type(owner).__name__})") from None
        _set(model, owner_name, fresh)
    still = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still:
        raise ValueError(f"int8 folder lacks weights for {still[:5]}")
    return model
