"""Inference: prompt -> chat template -> model -> answer with the template and stop strings removed.

The prompt is formatted exactly as in fine-tuning (same template, same system prompt), decoding settings
come from params (greedy or sampling, max new tokens, temperature, top-p, stop strings), and only the new
tokens are decoded, so the answer never echoes the prompt or the template's markers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .sft import end_of_turn, prompt_ids


class ModelMissing(FileNotFoundError):
    pass


class PromptTooLong(ValueError):
    pass


@dataclass(frozen=True)
class GenerationSettings:
    mode: str = "greedy"  # greedy | sample
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    stop: list[str] = field(default_factory=list)
    max_prompt_tokens: int = 2048
    system_prompt: str | None = None
    seed: int = 1234

    @classmethod
    def from_params(cls, gen: Any, system_prompt: str | None = None, seed: int = 1234) -> GenerationSettings:
        return cls(mode=gen.mode, max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p,
                   repetition_penalty=gen.repetition_penalty, stop=list(gen.stop), max_prompt_tokens=gen.max_prompt_tokens,
                   system_prompt=system_prompt, seed=seed)


def load_for_inference(folder: Path | str, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) from a saved model folder, on `device` (auto | cpu | cuda), or ModelMissing saying how to make one."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelMissing(f"no model at {folder} (no config.json); train it first, e.g. `vertical-dag run finetune` "
                           "or `dvc repro`, or pass --model with a model folder")
    from .load import load_model_folder, pick_device

    model, tok = load_model_folder(folder)
    model.to(pick_device(device)).eval()
    return model, tok


def context_limit(model: Any) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)


def encode_prompt(tokenizer: Any, model: Any, prompt: str, settings: GenerationSettings) -> list[int]:
    ids = prompt_ids(tokenizer, [{"role": "user", "content": prompt}], settings.system_prompt)
    limit = min(settings.max_prompt_tokens, context_limit(model) - settings.max_new_tokens)
    if len(ids) > limit:
        raise PromptTooLong(f"prompt is {len(ids)} tokens with the template; the limit is {limit} "
                            f"(max_prompt_tokens {settings.max_prompt_tokens}, model context {context_limit(model)} "
                            f"minus max_new_tokens {settings.max_new_tokens})")
    return ids


def postprocess(text: str, tokenizer: Any, stop: list[str]) -> tuple[str, str]:
    """Cut at the end-of-turn marker or the first stop string; return (answer, why it ended)."""
    reason = "length"
    marks = [m for m in {end_of_turn(tokenizer), tokenizer.eos_token} if m]
    for mark in marks:
        if mark in text:
            text, reason = text[: text.index(mark)], "end_of_turn"
    cut = [(text.index(s), s) for s in stop if s and s in text]
    if cut:
        pos, _ = min(cut)
        text, reason = text[:pos], "stop_string"
    # a byte-level BPE cut by max_new_tokens can end inside a character: drop the dangling replacement mark
    return text.strip().rstrip("\ufffd").strip(), reason


def _stop_ids(tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    eot = end_of_turn(tokenizer)
    if eot:
        t = tokenizer(eot, add_special_tokens=False)["input_ids"]
        if len(t) == 1:
            ids.add(t[0])
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def generate_ids(model: Any, tokenizer: Any, ids: list[int], settings: GenerationSettings) -> list[int]:
    sample = settings.mode == "sample"
    if sample:
        torch.manual_seed(settings.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs: dict[str, Any] = dict(max_new_tokens=settings.max_new_tokens, do_sample=sample,
                                  repetition_penalty=settings.repetition_penalty,
                                  eos_token_id=_stop_ids(tokenizer), pad_token_id=pad)
    if sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if settings.stop:
        kwargs.update(stop_strings=list(settings.stop), tokenizer=tokenizer)
    x = torch.tensor([ids], device=model.device)  # the prompt goes where the model is (CPU or GPU)
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), **kwargs)
    return out[0, len(ids):].tolist()


def generate_one(model: Any, tokenizer: Any, prompt: str, settings: GenerationSettings) -> dict[str, Any]:
    ids = encode_prompt(tokenizer, model, prompt, settings)
    new = generate_ids(model, tokenizer, ids, settings)
    raw = tokenizer.decode(new, skip_special_tokens=False)
    text, reason = postprocess(raw, tokenizer, settings.stop)
    return {"prompt": prompt, "output": text, "prompt_tokens": len(ids), "new_tokens": len(new), "finish_reason": reason}
