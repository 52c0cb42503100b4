"""The export stage: an int8 folder and a GGUF file of the fine-tuned model, loaded back and measured."""

from __future__ import annotations

import json

import gguf
import pytest
import torch
import yaml

from vertical_dag.modeling.generate import GenerationSettings, generate_one, load_for_inference
from vertical_dag.modeling.quantize import is_int8_folder, quantize_rows
from vertical_dag.stages.context import run_stage

from .test_finetune import make_project


def test_quantize_rows_error_is_at_most_half_a_step():
    w = torch.randn(48, 64) * torch.linspace(0.01, 3, 48)[:, None]  # rows of very different scales
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert bool(((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-6).all())


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("export") / "p"
    project = make_project(root, tokenizer_dir, models=("finetuned",))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["export"] = {"max_eval_docs": 6, "max_eval_tokens": 400, "speed_new_tokens": 4}
    (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    metrics = run_stage("export", project)
    return project, metrics


@pytest.mark.slow  # transformers parses the GGUF (49k-token vocabulary) in Python: ~40 s per load
def test_export_writes_int8_and_gguf_and_measures_them_against_float32(exported):
    project, m = exported
    out = project.root / "data/models/export"
    assert json.loads((out / "export.json").read_text())["int8"]["bytes"] == m["int8"]["bytes"]
    fp = m["float32"]
    assert fp["bits_per_char"] > 0 and fp["tokens_per_s"] > 0 and m["eval_docs"] == 6
    assert m["int8"]["bytes"] < fp["bytes"] / 3  # int8 weights: about a quarter of float32
    assert m["gguf"]["bytes"] < fp["bytes"] / 2  # Q8_0 plus the tokenizer (1.7 MB: much of a tiny model)
    for name in ("int8", "gguf"):
        assert abs(m[name]["bpc_increase"]) < 0.05 * fp["bits_per_char"], m[name]  # measured, and small
    assert m["int8"]["tokens_per_s"] > 0 and "speedup" in m["int8"] and m["int8"]["default"] is True
    assert m["int8_dynamic"]["bits_per_char"] > 0 and m["int8_dynamic"]["kernel"] == "dynamic"  # measured too
    assert m["gguf"]["tokenizer_round_trip"] is True  # transformers read the GGUF's tokenizer back identically
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))  # no pickles
    assert (project.root / "data/gates/export.json").is_file()


@pytest.mark.slow
def test_the_gguf_file_is_a_llama_cpp_layout(exported):
    project, m = exported
    reader = gguf.GGUFReader(m["gguf"]["path"])
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert "<|im_start|>" in reader.fields["tokenizer.chat_template"].contents()
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["token_embd.weight"] == "Q8_0" and types["blk.0.attn_q.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32" and "output.weight" not in types  # tied to token_embd


@pytest.mark.slow
def test_the_int8_folder_serves_answers(exported):
    project, m = exported
    folder = project.root / "data/models/export/int8"
    assert is_int8_folder(folder)
    model, tok = load_for_inference(folder)
    res = generate_one(model, tok, "《刑法》第一条规定了什么？", GenerationSettings(max_new_tokens=4))
    assert 0 < res["new_tokens"] <= 4 and res["finish_reason"] in ("length", "end_of_turn", "stop_string")
