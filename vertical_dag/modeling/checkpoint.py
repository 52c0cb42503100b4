"""Resume checkpoints: everything needed to continue training exactly where it stopped.

A checkpoint is a folder `step-NNNNNNN/` holding
  model.safetensors   the trainable weights (all of them, or a LoRA model's adapters; safetensors: no pickle)
  optimizer.pt        optimizer state, tensors and numbers only, read back with torch.load(weights_only=True)
  rng.pt              torch (CPU and CUDA) RNG states, read back the same way
  state.json          step, tokens seen, data position, scheduler state, loss history, run fingerprint
It is written under a temporary name and renamed when complete, then `latest.json` is replaced atomically,
so a kill at any moment leaves the previous checkpoint intact. Older checkpoints beyond `keep` are removed.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..records import read_json, write_json

LATEST = "latest.json"


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:07d}"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train, by name (tied weights once): what a checkpoint must restore.

    Frozen weights (a LoRA model's base) come from the starting model, so checkpoints stay small."""
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], keep: int = 1) -> Path:
    """Write a complete checkpoint for `step`, point latest.json at it, and prune old ones."""
    root.mkdir(parents=True, exist_ok=True)
    final = _step_dir(root, step)
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable_state(model), str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    py_state = random.getstate()
    (tmp / "state.json").write_text(json.dumps({**state, "python_random": [py_state[0], list(py_state[1]), py_state[2]]}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    write_json({"step": step, "dir": final.name}, root / LATEST)
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[:-keep] if keep > 0 else []:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    info = read_json(root / LATEST)
    if not info:
        return None
    path = root / info["dir"]
    return path if (path / "state.json").is_file() and (path / "model.safetensors").is_file() else None


def checkpoint_fingerprint(path: Path) -> Any:
    return json.loads((path / "state.json").read_text()).get("fingerprint")


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore weights, optimizer and RNG in place; return the saved training state."""
    device = next(model.parameters()).device
    saved = load_file(str(path / "model.safetensors"), device=str(device))
    params = dict(model.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    missing, unexpected = sorted(wanted - saved.keys()), sorted(saved.keys() - wanted)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {path} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    state = json.loads((path / "state.json").read_text())
    py = state.pop("python_random", None)
    if py:
        random.setstate((py[0], tuple(py[1]), py[2]))
    return state


def clear_checkpoints(root: Path) -> None:
    if root.exists():
        for p in root.iterdir():
            if p.name.startswith(("step-", ".step-")) or p.name == LATEST:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
