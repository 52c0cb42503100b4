"""Base model import: local HF folder (tiny), source detection, re-import only on change, and the real GGUF (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vertical_dag.modeling.load import (
    ModelImportError,
    detect_kind,
    import_model,
    instruct_warning,
    load_model_folder,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    from vertical_dag.modeling.tiny import build_tiny_llama

    return build_tiny_llama(tokenizer_dir, tmp_path_factory.mktemp("tiny") / "model", hidden=32, layers=1, heads=2,
                            kv_heads=1, intermediate=64)


def test_detect_kind(tmp_path: Path, tiny_dir: Path) -> None:
    assert detect_kind(str(tiny_dir), None) == ("hf_folder", tiny_dir)
    assert detect_kind("HuggingFaceTB/SmolLM2-135M", None) == ("hub", None)
    with pytest.raises(ModelImportError, match="GGUF file not found"):
        detect_kind(str(tmp_path), "missing.gguf")
    with pytest.raises(ModelImportError, match="no config.json"):
        detect_kind(str(tmp_path), None)


def test_instruct_warning() -> None:
    class Tok:
        chat_template = None

    assert instruct_warning("SmolLM2-135M", Tok()) is None
    assert "instruct" in instruct_warning("SmolLM2-135M-Instruct.Q4_1.gguf", Tok())
    Tok.chat_template = "{{ messages }}"
    assert "chat template" in instruct_warning("my-model", Tok())


def test_import_hf_folder_roundtrip(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "base"
    info = import_model(str(tiny_dir), out, root=tmp_path)
    assert info.kind == "hf_folder" and info.architecture == "LlamaForCausalLM"
    assert len(info.sha256) == 64 and len(info.output_sha256) == 64
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    a, _ = load_model_folder(tiny_dir)
    b, tok = load_model_folder(out)
    ids = torch.tensor([tok("第一条　为了规范合同行为").input_ids])
    with torch.no_grad():
        torch.testing.assert_close(a(ids).logits, b(ids).logits)


def test_encoder_only_models_are_refused_with_the_reason(tmp_path: Path) -> None:
    from transformers import BertConfig

    folder = tmp_path / "bert"
    BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64).save_pretrained(folder)
    with pytest.raises(ModelImportError, match="'bert' is an encoder-only model.*causal"):
        import_model(str(folder), tmp_path / "out", root=tmp_path)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ModelImportError, match="encoder-only"):
        load_model_folder(folder)


def test_stage_records_the_source_it_imported(project: Path, tiny_dir: Path, tokenizer_dir: Path) -> None:
    """Whether to import again is DVC's call (test_stage_core: the source folder is a dependency); the stage
    records what it imported from, and a changed source gives a changed record."""
    import yaml

    from vertical_dag.modeling.tiny import build_tiny_llama
    from vertical_dag.project import Project
    from vertical_dag.stages.context import run_stage

    src = project / "data" / "cache" / "models" / "tiny"
    build_tiny_llama(tokenizer_dir, src, hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["base_model"] = {"source": "data/cache/models/tiny"}
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    first = run_stage("base_model", Project(project))
    assert first["source"] == "data/cache/models/tiny"
    record = json.loads((project / "data/models/base/source.json").read_text())
    assert record["sha256"] == first["sha256"] and record["kind"] == "hf_folder"
    again = run_stage("base_model", Project(project))
    assert again["output_sha256"] == first["output_sha256"]  # the same source imports to the same weights
    build_tiny_llama(tokenizer_dir, src, hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, seed=1)
    changed = run_stage("base_model", Project(project))
    assert changed["sha256"] != first["sha256"] and changed["output_sha256"] != first["output_sha256"]


@pytest.mark.slow
def test_import_real_gguf(smollm2_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "base"
    info = import_model(str(smollm2_gguf.parent), out, gguf_file=smollm2_gguf.name)
    assert info.kind == "gguf" and info.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert info.is_instruct and info.parameters == 134_515_008
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tok("The capital of France is").input_ids])
    with torch.no_grad():
        nxt = model(ids).logits[0, -1].argmax()
    assert "Paris" in tok.decode([int(nxt)])  # the dequantised weights still make a working model
