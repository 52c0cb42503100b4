"""A tiny Llama built from a config, with a real tokenizer: a model folder that trains in seconds on a CPU.

Used by tests and quick smoke runs; it has the same layout as an imported base model (config.json,
model.safetensors, tokenizer files), so every stage treats it like the real thing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def build_tiny_llama(tokenizer_dir: Path | str, out_dir: Path | str, *, hidden: int = 64, layers: int = 2,
                     heads: int = 4, kv_heads: int = 2, intermediate: int = 128, max_positions: int = 2048,
                     seed: int = 0) -> Path:
    """Write a randomly initialised LlamaForCausalLM sized for tests, plus the tokenizer, to out_dir."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
