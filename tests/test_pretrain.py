"""Continued pretraining: packing, replay, the training loop, kill-and-resume, and the stage end to end.

Tiny Llama models built from a config with the real SmolLM2 tokenizer; the real 135M model only in the
slow test of tests/test_base_model.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from vertical_dag.modeling.packing import (
    DOMAIN_SOURCE,
    GENERAL_SOURCE,
    IGNORE,
    cross_document_attention_blocked,
    pack,
    tokenize,
)
from vertical_dag.modeling.replay import select_replay
from vertical_dag.modeling.train import TrainConfig, block_order, lr_at, train

from .conftest import run_cli

PHRASES = ["当事人", "应当", "依照本法", "人民法院", "合同", "履行", "义务", "规定", "赔偿", "责任", "国务院", "有关部门",
           "不得", "违反", "行政", "许可", "申请", "批准", "登记", "监督"]


def legal_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"第{i + 1}条　" + "".join(rng.choice(PHRASES, size=int(rng.integers(5, 40)))) + "。" for i in range(n)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    from vertical_dag.modeling.tiny import build_tiny_llama

    return build_tiny_llama(tokenizer_dir, tmp_path_factory.mktemp("tiny") / "model", hidden=32, layers=2, heads=2,
                            kv_heads=1, intermediate=64)


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path):
    from vertical_dag.modeling.load import load_model_folder

    return load_model_folder(tiny_dir)


# ---------------------------------------------------------------- packing


def test_pack_keeps_every_token_separates_with_eos_and_resets_positions() -> None:
    docs = [np.arange(10, 10 + n, dtype=np.int32) for n in (5, 11, 3, 7)]  # 26 tokens + 4 EOS = 30
    p = pack(docs, block_size=8, eos_id=2, pad_id=0)
    assert p.input_ids.shape == (4, 8)  # ceil(30 / 8): the 6-token tail is kept in a padded last block
    stream = p.input_ids.reshape(-1)
    expected = np.concatenate([np.append(d, 2) for d in docs])
    assert (stream[:30] == expected).all() and (stream[30:] == 0).all()
    assert p.real_tokens == 30 and p.efficiency == pytest.approx(30 / 32)
    pos = p.position_ids.reshape(-1)
    # doc 1 = 6 tokens (0..5), doc 2 starts at 6 and is cut by the block boundary at 8, where positions restart
    assert pos[:8].tolist() == [0, 1, 2, 3, 4, 5, 0, 1]
    assert pos[8:16].tolist() == list(range(8))  # doc 2 continues through the whole second block
    assert pos[16:30].tolist() == [0, 1, 0, 1, 2, 3, 0, 1, 0, 1, 2, 3, 4, 5]  # doc 2 end, doc 3, doc 4 over a boundary
    assert pos[30:].tolist() == [0, 1]  # padding is its own segment
    labels = p.labels(np.arange(len(p))).reshape(-1)
    assert (labels[30:] == IGNORE).all()  # no loss on padding
    assert (labels[pos == 0] == IGNORE).all()  # nor on a segment's first token (no in-document context)
    assert (labels[(pos > 0) & (np.arange(32) < 30)] == stream[(pos > 0) & (np.arange(32) < 30)]).all()


def test_pack_efficiency_is_high_on_real_text(tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    docs = tokenize(tok, legal_texts(400))
    p = pack(docs, 256, tok.eos_token_id, tok.pad_token_id)
    assert p.documents == 400
    assert p.real_tokens == sum(len(d) + 1 for d in docs)  # nothing dropped
    assert p.efficiency >= 0.99


def test_packed_documents_do_not_attend_to_each_other(tiny) -> None:
    model, tok = tiny
    assert cross_document_attention_blocked(model, tok.eos_token_id)
    # Control: with running positions (naive packing) the second document does see the first.
    ids_a = torch.tensor([[100, 101, 102, 2, 200, 201, 202]])
    ids_b = torch.tensor([[300, 301, 302, 2, 200, 201, 202]])
    with torch.no_grad():
        naive = [model(input_ids=x, use_cache=False).logits[0, 4:] for x in (ids_a, ids_b)]
        reset = torch.tensor([[0, 1, 2, 3, 0, 1, 2]])
        packed = [model(input_ids=x, position_ids=reset, use_cache=False).logits[0, 4:] for x in (ids_a, ids_b)]
    assert not torch.allclose(naive[0], naive[1], atol=1e-4)
    assert torch.allclose(packed[0], packed[1], atol=1e-5)


# ---------------------------------------------------------------- replay


@pytest.mark.parametrize("ratio", [0.05, 0.25])
def test_replay_ratio_is_realised_at_the_token(ratio: float) -> None:
    rng = np.random.default_rng(1)
    domain = [rng.integers(10, 1000, size=int(n)).astype(np.int32) for n in rng.integers(20, 300, size=200)]
    general = [rng.integers(10, 1000, size=int(n)).astype(np.int32) for n in rng.integers(20, 300, size=300)]
    d_tokens = sum(len(d) + 1 for d in domain)
    sel = select_replay(general, d_tokens, ratio, seed=3, heldout_docs=20)
    assert len(sel.heldout) == 20 and not sel.repeated
    held = {d.tobytes() for d in sel.heldout}
    assert not any(d.tobytes() in held for d in sel.docs)  # forgetting is measured on text never trained on
    p = pack(domain + sel.docs, 128, 2, 0, [DOMAIN_SOURCE] * len(domain) + [GENERAL_SOURCE] * len(sel.docs))
    realised = p.tokens_of(GENERAL_SOURCE) / p.real_tokens
    assert abs(realised - ratio) < 1e-3


# ---------------------------------------------------------------- training


def test_schedule_and_data_order() -> None:
    cfg = TrainConfig(max_steps=10, warmup_steps=2, lr=1.0, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(10)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[-1] > 0.1 and all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False))
    first = block_order(7, seed=5, start=0, count=14)
    assert sorted(first[:7]) == list(range(7)) and sorted(first[7:]) == list(range(7))  # every block once per epoch
    assert (block_order(7, seed=5, start=9, count=3) == first[9:12]).all()  # position-addressable: resume reads the same


def test_loss_decreases_and_validation_improves(tiny_dir: Path, tmp_path: Path) -> None:
    from vertical_dag.modeling.load import load_model_folder

    torch.set_num_threads(1)
    model, tok = load_model_folder(tiny_dir)
    data = pack(tokenize(tok, legal_texts(300)), 64, tok.eos_token_id, tok.pad_token_id)
    val = pack(tokenize(tok, legal_texts(30, seed=9)), 64, tok.eos_token_id, tok.pad_token_id)
    cfg = TrainConfig(max_steps=12, batch_size=4, lr=5e-3, warmup_steps=2, eval_every=6, eval_blocks=4, checkpoint_every=6)
    r = train(model, data, val, cfg, tmp_path / "ckpt")
    losses = [h["loss"] for h in r.history]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5
    assert r.metrics["val_perplexity_final"] < r.metrics["val_perplexity_base"]
    assert r.metrics["tokens_trained"] == 12 * 4 * 64 - sum(  # every non-padding token of the blocks read
        int((data.source[b] == 0).sum()) for b in block_order(len(data), cfg.seed, 0, 48))
    assert (tmp_path / "ckpt" / "step-0000012" / "model.safetensors").exists()
    assert not (tmp_path / "ckpt" / "step-0000006").exists()  # keep_checkpoints=1


RESUME_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from safetensors.torch import save_model
    from tests.test_pretrain import resume_case
    from vertical_dag.modeling.train import train

    model, data, val, cfg = resume_case(sys.argv[1], sys.argv[2])
    out, slow = Path(sys.argv[3]), sys.argv[4] == "slow"
    r = train(model, data, val, cfg, out / "ckpt", on_step=(lambda s, rec: time.sleep(0.4)) if slow else None)
    save_model(model, str(out / "final.safetensors"))
    (out / "result.json").write_text(json.dumps({"history": r.history, "resumed_from": r.resumed_from}))
""")


def resume_case(tiny_dir: str, texts_file: str):
    """Model, data and settings shared by the killed, resumed and uninterrupted runs."""
    from vertical_dag.modeling.load import load_model_folder

    model, tok = load_model_folder(tiny_dir)
    texts = json.loads(Path(texts_file).read_text())
    data = pack(tokenize(tok, texts["train"]), 64, tok.eos_token_id, tok.pad_token_id)
    val = pack(tokenize(tok, texts["val"]), 64, tok.eos_token_id, tok.pad_token_id)
    cfg = TrainConfig(max_steps=12, batch_size=2, grad_accum=2, lr=3e-3, warmup_steps=3, eval_every=4, eval_blocks=2,
                      checkpoint_every=4, seed=7)
    return model, data, val, cfg


def test_sigkill_after_checkpoint_then_resume_matches_uninterrupted_run(tiny_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_model

    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps({"train": legal_texts(120), "val": legal_texts(10, seed=4)}, ensure_ascii=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def start(out: Path, mode: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), str(tiny_dir), str(texts), str(out), mode], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    full, killed = tmp_path / "full", tmp_path / "killed"
    victim = start(killed, "slow")
    # The uninterrupted reference runs here meanwhile, with the same thread count as the subprocesses.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, data, val, cfg = resume_case(str(tiny_dir), str(texts))
        ref = train(model, data, val, cfg, full / "ckpt")
        save_model(model, str(full / "final.safetensors"))
    finally:
        torch.set_num_threads(threads)
    latest = killed / "ckpt" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and victim.poll() is None:
        if latest.exists() and json.loads(latest.read_text())["step"] >= 4:
            break
        time.sleep(0.05)
    assert victim.poll() is None, f"training finished before it could be killed:\n{victim.stdout.read()}"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (killed / "result.json").exists()
    killed_at = json.loads(latest.read_text())["step"]
    assert 4 <= killed_at < 12

    resumed = start(killed, "fast")
    out_r, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, out_r
    b = json.loads((killed / "result.json").read_text())
    assert ref.resumed_from is None and b["resumed_from"] == killed_at
    assert [h["step"] for h in b["history"]] == list(range(1, 13))
    for x, y in zip(ref.history, b["history"], strict=True):  # same data order, same loss trajectory
        assert x["tokens"] == y["tokens"]
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-5)
        assert (x["val_ppl"] is None) == (y["val_ppl"] is None)
    wa, wb = load_file(full / "final.safetensors"), load_file(killed / "final.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- the stage, through the CLI


def _write_splits(root: Path) -> None:
    splits = root / "data" / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    for name, texts in (("train", legal_texts(200) + [""]), ("validation", legal_texts(20, seed=5)), ("test", legal_texts(5, seed=6))):
        n = len(texts)
        pq.write_table(pa.table({
            "doc_id": [f"{name}-{i}" for i in range(n)], "source": ["law"] * n, "uri": ["u"] * n, "batch": ["b"] * n,
            "text": pa.array(texts, pa.large_string()), "lang": ["zh"] * n, "meta": ["{}"] * n, "split": [name] * n,
        }), splits / f"{name}.parquet")


def test_stage_imports_base_then_pretrains_with_replay(project: Path, tiny_dir: Path) -> None:
    import yaml

    _write_splits(project)
    general = project / "data" / "general.jsonl"
    general.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                               for t in ["今天天气很好，我们去公园散步，看到很多人在锻炼身体。" * 2] * 60), encoding="utf-8")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["base_model"] = {"source": str(tiny_dir), "gguf_file": None}
    params["pretrain"] = {"block_size": 64, "batch_size": 4, "lr": 5e-3, "max_steps": 8, "eval_every": 4, "eval_blocks": 4,
                          "checkpoint_every": 4, "replay_ratio": 0.2, "replay_path": "data/general.jsonl",
                          "replay_heldout_docs": 5, "threads": 1}
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))

    from vertical_dag.project import Project
    from vertical_dag.stages.context import run_stage

    base = run_stage("base_model", Project(project))
    assert base["kind"] == "hf_folder" and len(base["sha256"]) == 64
    assert base["is_instruct"]  # the SmolLM2 tokenizer carries a chat template: warned
    source = json.loads((project / "data/models/base/source.json").read_text())
    assert source["kind"] == "hf_folder" and source["output_sha256"] == base["output_sha256"]

    m = json.loads(run_cli("run", "pretrain", "--json", cwd=project).stdout)
    assert m["documents_in"] == 201 and m["documents_out"] == 200 and m["dropped"] == 1
    assert m["drops_by_reason"] == {"no_tokens": 1}
    assert m["packing_efficiency"] >= 0.99 and m["document_masking"] is True
    assert m["replay_ratio_target"] == 0.2 and abs(m["replay_ratio_realised"] - 0.2) < 0.01
    assert m["val_perplexity_final"] < m["val_perplexity_base"]
    assert m["fertility_domain"] > 0 and m["fertility_general"] > 0
    assert m["general_perplexity_base"] is not None and m["steps"] == 8 and m["tokens_per_s"] > 0
    out = project / "data/models/pretrained"
    card = (out / "model" / "README.md").read_text()
    assert "val_perplexity_final" in card and base["sha256"] in card
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out / "model")  # the next stages load it like any HF checkpoint
    AutoTokenizer.from_pretrained(out / "model")
    curve = (project / "data/plots/pretrain_loss.csv").read_text().splitlines()
    assert curve[0] == "step,loss,lr,tokens,val_ppl" and len(curve) == 9
    assert (out / "checkpoints" / "step-0000008").is_dir()
    ledger = pq.read_table(out / "ledger" / "train.parquet")
    assert ledger.column("doc_id").to_pylist() == ["train-200"]

    # A rerun with nothing changed resumes from the final checkpoint instead of training again.
    again = run_stage("pretrain", Project(project))
    assert again["resumed_from_step"] == 8 and again["val_perplexity_final"] == pytest.approx(m["val_perplexity_final"])


DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from tests.test_pretrain import legal_texts
    from vertical_dag.modeling.load import load_model_folder
    from vertical_dag.modeling.packing import pack, tokenize
    from vertical_dag.modeling.train import TrainConfig, train

    model, tok = load_model_folder(sys.argv[1])
    data = pack(tokenize(tok, legal_texts(120)), 64, tok.eos_token_id, tok.pad_token_id)
    val = pack(tokenize(tok, legal_texts(10, seed=4)), 64, tok.eos_token_id, tok.pad_token_id)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = TrainConfig(max_steps=6, batch_size=4 // world, grad_accum=2, lr=3e-3, warmup_steps=2, eval_every=3,
                      eval_blocks=2, checkpoint_every=3, seed=7)
    r = train(model, data, val, cfg, Path(sys.argv[2]))
    if int(os.environ.get("RANK", "0")) == 0:
        Path(sys.argv[3]).write_text(json.dumps({"history": r.history, "world": r.metrics["world_size"]}))
""")


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(tiny_dir: Path, tmp_path: Path) -> None:
    """The same code under torchrun (gloo on CPU): 2 ranks x batch 2 follow the 1 x batch 4 loss trajectory."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    torchrun = Path(sys.executable).parent / "torchrun"
    one = subprocess.run([sys.executable, str(script), str(tiny_dir), str(tmp_path / "c1"), str(tmp_path / "one.json")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29531", str(script), str(tiny_dir),
                          str(tmp_path / "c2"), str(tmp_path / "two.json")], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert a["world"] == 1 and b["world"] == 2
    for x, y in zip(a["history"], b["history"], strict=True):
        assert x["tokens"] == y["tokens"]
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-4)
