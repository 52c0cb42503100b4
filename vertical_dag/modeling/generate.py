"""Inference: prompt -> chat template -> model -> answer with the template and stop strings removed.

The prompt is processed as the corpus was (prompting.py), formatted exactly as in fine-tuning (same
template, same system prompt), decoded by the shared loop in decode.py with settings from params (greedy
or sampling, max new tokens, temperature, top-p, stop strings), and only the new tokens are decoded, so
the answer never echoes the prompt or the template's markers. TextStream gives the same answer in pieces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .decode import Row, decode
from .prompting import InputProcessor
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
        """From a finetune.generation section (GenerationParams) and the finetune system prompt and seed."""
        return cls(mode=gen.mode, max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p,
                   repetition_penalty=gen.repetition_penalty, stop=list(gen.stop), max_prompt_tokens=gen.max_prompt_tokens,
                   system_prompt=system_prompt, seed=seed)


def load_for_inference(folder: Path | str, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) from a saved model folder (or an int8 export, always on CPU), on `device`
    (auto | cpu | cuda), or ModelMissing saying how to make one."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelMissing(f"no model at {folder} (no config.json); train it first, e.g. `vertical-dag run finetune` "
                           "or `dvc repro`, or pass --model with a model folder")
    from .load import load_model_folder, pick_device
    from .quantize import is_int8_folder, load_int8

    if is_int8_folder(folder):
        return load_int8(folder)
    model, tok = load_model_folder(folder)
    model.to(pick_device(device)).eval()
    return model, tok


def context_limit(model: Any) -> int:
    return int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)


def check_length(ids: list[int], model: Any, settings: GenerationSettings) -> list[int]:
    if settings.max_new_tokens >= context_limit(model):
        raise PromptTooLong(f"max_new_tokens {settings.max_new_tokens} leaves no room for a prompt in the model "
                            f"context of {context_limit(model)} tokens")
    limit = min(settings.max_prompt_tokens, context_limit(model) - settings.max_new_tokens)
    if len(ids) > limit:
        raise PromptTooLong(f"prompt is {len(ids)} tokens with the template; the limit is {limit} "
                            f"(max_prompt_tokens {settings.max_prompt_tokens}, model context {context_limit(model)} "
                            f"minus max_new_tokens {settings.max_new_tokens})")
    return ids


def encode_chat(tokenizer: Any, model: Any, messages: list[dict[str, str]], settings: GenerationSettings) -> list[int]:
    """A chat (already processed) as the model saw it in fine-tuning: template, system prompt, generation header."""
    return check_length(prompt_ids(tokenizer, messages, settings.system_prompt), model, settings)


def encode_prompt(tokenizer: Any, model: Any, prompt: str, settings: GenerationSettings) -> list[int]:
    return encode_chat(tokenizer, model, [{"role": "user", "content": prompt}], settings)


def encode_text(tokenizer: Any, model: Any, text: str, settings: GenerationSettings) -> list[int]:
    """Plain text to continue (no chat template), as in pretraining; an empty text starts after BOS/EOS."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ids = [start]
    return check_length(ids, model, settings)


def _marks(tokenizer: Any) -> list[str]:
    return [m for m in {end_of_turn(tokenizer), tokenizer.eos_token} if m]


def postprocess(text: str, tokenizer: Any, stop: list[str]) -> tuple[str, str]:
    """Cut at the end-of-turn marker or the first stop string; return (answer, why it ended)."""
    reason = "length"
    for mark in _marks(tokenizer):
        if mark in text:
            text, reason = text[: text.index(mark)], "end_of_turn"
    cut = [(text.index(s), s) for s in stop if s and s in text]
    if cut:
        pos, _ = min(cut)
        text, reason = text[:pos], "stop_string"
    # a byte-level BPE cut by max_new_tokens can end inside a character: drop the dangling replacement mark
    return text.strip().rstrip("\ufffd").strip(), reason


class TextStream:
    """Incremental answer text for streaming: the deltas joined are exactly postprocess()'s answer.

    Text that could still turn out to be the start of a stop string or end-of-turn marker, trailing
    whitespace and a half-decoded character are held back until the next tokens decide them.
    """

    def __init__(self, tokenizer: Any, stop: list[str]):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.cuts = self.stop + _marks(tokenizer)
        self.sent = ""

    def _held_back(self, text: str) -> int:
        n = 0
        for cut in self.cuts:
            for k in range(min(len(cut) - 1, len(text)), n, -1):
                if text.endswith(cut[:k]):
                    n = k
                    break
        return n

    def push(self, new_ids: list[int]) -> str:
        raw = self.tokenizer.decode(new_ids, skip_special_tokens=False)
        for cut in self.cuts:
            if cut in raw:
                raw = raw[: raw.index(cut)]
        text = raw.lstrip()
        text = text[: len(text) - self._held_back(text)].rstrip().rstrip("\ufffd")
        if not text.startswith(self.sent) or len(text) <= len(self.sent):
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta

    def finish(self, new_ids: list[int]) -> tuple[str, str, str]:
        """(whole answer, finish reason, the last delta)."""
        text, reason = postprocess(self.tokenizer.decode(new_ids, skip_special_tokens=False), self.tokenizer, self.stop)
        delta = text[len(self.sent):] if text.startswith(self.sent) else ""
        self.sent = text
        return text, reason, delta


def stop_token_ids(tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    eot = end_of_turn(tokenizer)
    if eot:
        t = tokenizer(eot, add_special_tokens=False)["input_ids"]
        if len(t) == 1:
            ids.add(t[0])
    return sorted(i for i in ids if i is not None)


def generate_ids(model: Any, tokenizer: Any, ids: list[int], settings: GenerationSettings) -> list[int]:
    row = Row(ids=ids, settings=settings)
    decode(model, tokenizer, [row], stop_token_ids(tokenizer))
    return row.new


def finish_reason(new_ids: list[int], tokenizer: Any, settings: GenerationSettings) -> tuple[str, str]:
    return postprocess(tokenizer.decode(new_ids, skip_special_tokens=False), tokenizer, settings.stop)


def generate_one(model: Any, tokenizer: Any, prompt: str, settings: GenerationSettings,
                 processor: InputProcessor | None = None) -> dict[str, Any]:
    """Answer one prompt; with a processor, the prompt is first cleaned (and redacted) as the corpus was,
    and the returned "prompt" is that processed text."""
    redactions: dict[str, int] = {}
    if processor is not None:
        done = processor.text(prompt)
        prompt, redactions = done.text, done.redactions
    ids = encode_prompt(tokenizer, model, prompt, settings)
    new = generate_ids(model, tokenizer, ids, settings)
    text, reason = finish_reason(new, tokenizer, settings)
    res = {"prompt": prompt, "output": text, "prompt_tokens": len(ids), "new_tokens": len(new), "finish_reason": reason}
    if redactions:
        res["redactions"] = redactions
    return res
