"""What fine-tuning adds to the shared training stack: chat formatting, response-only labels, LoRA.

A chat is rendered with the tokenizer's own chat template (a plain "### Instruction / ### Response" layout
when it has none) and tokenized turn by turn, so the labels cover exactly the assistant turns (their text
and end-of-turn token); every prompt token is IGNORE. Packing (`packing.pack_whole`), the loop, the
optimiser, the schedule and the checkpoints are pretraining's (`train.py`). LoRA adapters wrap the model
before that loop and are merged back into the weights after it, so serving needs no peft.
"""

from __future__ import annotations

from typing import Any

from .packing import IGNORE

FALLBACK_USER = "### Instruction:\n{content}\n\n### Response:\n"


# ---------------------------------------------------------------- formatting and masking


def with_system(messages: list[dict[str, str]], system_prompt: str | None) -> list[dict[str, str]]:
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return list(messages)


def render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """The chat as text, by the tokenizer's template or the plain fallback layout."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    eos = tokenizer.eos_token or ""
    text = ""
    for m in messages:
        if m["role"] == "assistant":
            text += m["content"] + eos + "\n\n"
        elif m["role"] == "system":
            text += m["content"] + "\n\n"
        else:
            text += FALLBACK_USER.format(content=m["content"])
    return text  # a user block already ends with the response header, so no separate generation prompt


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]], system_prompt: str | None = None) -> list[int]:
    """Token ids of a prompt ready for the assistant's answer (what generation and MC scoring start from)."""
    text = render(tokenizer, with_system(messages, system_prompt), add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def end_of_turn(tokenizer: Any) -> str:
    """The text the template puts after an assistant answer (e.g. "<|im_end|>"), without trailing whitespace."""
    probe = "\x00probe\x00"
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": probe}]
    text = render(tokenizer, msgs, add_generation_prompt=False)
    return text[text.index(probe) + len(probe):].rstrip() if probe in text else (tokenizer.eos_token or "")


class TemplateError(ValueError):
    pass


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], system_prompt: str | None = None) -> tuple[list[int], list[int]]:
    """input_ids and labels for a chat; labels are the ids on assistant turns (+ end of turn), else -100."""
    msgs = with_system(messages, system_prompt)
    ids: list[int] = []
    labels: list[int] = []

    def add(text: str, learn: bool) -> None:
        if not text:
            return
        toks = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(toks)
        labels.extend(toks if learn else [IGNORE] * len(toks))

    done = ""
    for k, m in enumerate(msgs):
        if m["role"] == "assistant":
            head = render(tokenizer, msgs[:k], add_generation_prompt=True) if k else ""
            full = render(tokenizer, msgs[: k + 1], add_generation_prompt=False)
            if not head.startswith(done) or not full.startswith(head):
                raise TemplateError("the chat template does not render turns as prefixes of each other")
            add(head[len(done):], False)
            answer = full[len(head):]
            kept = answer.rstrip()
            add(kept, True)
            add(answer[len(kept):], False)  # whitespace after the end-of-turn token: not a target
            done = full
        else:
            full = render(tokenizer, msgs[: k + 1], add_generation_prompt=False)
            if not full.startswith(done):
                raise TemplateError("the chat template does not render turns as prefixes of each other")
            add(full[len(done):], False)
            done = full
    return ids, labels


# ---------------------------------------------------------------- LoRA


def wrap_lora(model: Any, *, r: int, alpha: float, dropout: float, target_modules: Any) -> Any:
    """The model with trainable LoRA adapters (peft); every base weight frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def merge_lora(model: Any) -> Any:
    """A plain transformers model with the adapters folded into its weights."""
    return model.merge_and_unload()
