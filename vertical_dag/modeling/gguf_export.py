"""Write a Llama-family causal LM as a GGUF file (llama.cpp / Ollama) with the `gguf` library.

Weights are laid out as llama.cpp expects them: tensor names from gguf's own name map, query and key
projections permuted from Hugging Face's rotate-half layout to llama.cpp's interleaved one (transformers
undoes this when it loads a GGUF back), matrices quantized to Q8_0 (or kept f16/f32), norms in f32.
The tokenizer goes in as a GPT-2-style BPE (tokens, types, merges, special ids, chat template).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

SUPPORTED = {"llama"}
QTYPES = {"q8_0": ("Q8_0", "MOSTLY_Q8_0"), "f16": ("F16", "MOSTLY_F16"), "f32": ("F32", "ALL_F32")}


class GGUFUnsupported(ValueError):
    pass


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's rotate-half rows -> llama.cpp's interleaved pairs (per head)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _vocab(tokenizer: Any) -> tuple[list[str], list[int]]:
    import gguf

    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_ids)
    added = set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    size = max(by_id) + 1
    tokens, types = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
        else:
            tokens.append(by_id[i])
            kind = gguf.TokenType.CONTROL if i in special else (
                gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL)
            types.append(int(kind))
    return tokens, types


def _merges(tokenizer: Any) -> list[str]:
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise GGUFUnsupported(f"tokenizer model {model.get('type')!r}: only byte-level BPE tokenizers are written")
    return [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]


def _add_metadata(w: Any, config: Any, tokenizer: Any, name: str, file_type: Any, pre: str) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    w.add_name(name)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    rope = getattr(config, "rope_parameters", None) or {}
    w.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    w.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    w.add_vocab_size(config.vocab_size)
    w.add_rope_dimension_count(head_dim)
    w.add_file_type(file_type)
    tokens, types = _vocab(tokenizer)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(_merges(tokenizer))
    for add, tid in [(w.add_bos_token_id, tokenizer.bos_token_id), (w.add_eos_token_id, tokenizer.eos_token_id),
                     (w.add_unk_token_id, tokenizer.unk_token_id), (w.add_pad_token_id, tokenizer.pad_token_id)]:
        if tid is not None:
            add(int(tid))
    w.add_add_bos_token(False)
    if getattr(tokenizer, "chat_template", None):
        w.add_chat_template(tokenizer.chat_template)


def write_gguf(model: Any, tokenizer: Any, path: Path, *, qtype: str = "q8_0", pre: str = "default",
               name: str = "vertical_dag model") -> dict[str, Any]:
    """Write `path` (atomically); returns {path, bytes, tensors, qtype}. `pre` is llama.cpp's pre-tokenizer
    name (e.g. "smollm"); carry it over from the base model's GGUF when there was one."""
    import gguf

    config = model.config
    if config.model_type not in SUPPORTED:
        raise GGUFUnsupported(f"model type {config.model_type!r}: GGUF export is written for {sorted(SUPPORTED)}")
    tensor_type, file_type = (getattr(gguf.GGMLQuantizationType, QTYPES[qtype][0]),
                              getattr(gguf.LlamaFileType, QTYPES[qtype][1]))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(tmp), arch="llama")
    _add_metadata(writer, config, tokenizer, name, file_type, pre)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    count = 0
    for key, value in model.state_dict().items():
        if key.endswith("rotary_emb.inv_freq") or (tied and key == "lm_head.weight"):
            continue
        target = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise GGUFUnsupported(f"no GGUF name for tensor {key!r}")
        data = value.detach().float().cpu().numpy()
        if key.endswith("q_proj.weight"):
            data = _permute(data, config.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            data = _permute(data, config.num_key_value_heads)
        if data.ndim == 2 and tensor_type != gguf.GGMLQuantizationType.F32:
            block = gguf.GGML_QUANT_SIZES[tensor_type][0]
            if tensor_type == gguf.GGMLQuantizationType.F16 or data.shape[-1] % block:  # Q8_0 needs whole blocks
                writer.add_tensor(target, data.astype(np.float16))
            else:
                writer.add_tensor(target, gguf.quants.quantize(data, tensor_type),
                                  raw_dtype=tensor_type)
        else:
            writer.add_tensor(target, data.astype(np.float32))
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.chmod(0o644)
    tmp.replace(path)
    return {"path": str(path), "bytes": path.stat().st_size, "tensors": count, "qtype": qtype}


def gguf_pre_tokenizer(gguf_path: Path) -> str | None:
    """The `tokenizer.ggml.pre` name recorded in an existing GGUF file (None when absent)."""
    import gguf

    field = gguf.GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.pre")
    return str(field.contents()) if field is not None else None


def load_gguf(path: Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file through transformers (dequantized to float32): the round trip."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    return model.eval(), tok
