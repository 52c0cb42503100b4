"""Pretraining benchmark: this stage's loop vs a plain transformers Trainer, same model, data and settings.

Model: a small Llama built from a config with the real SmolLM2 tokenizer (--model DIR for another HF folder,
e.g. data/models/base/model for the real 135M model). Data: the Chinese-law articles (data/raw/china_law,
`vertical-dag example fetch`), else generated legal-style text.

The baseline is the documented Hugging Face recipe (run_clm): tokenize, concatenate, cut into fixed blocks
(`group_texts`, which drops the tail), DataCollatorForLanguageModeling(mlm=False), Trainer with AdamW,
warmup + cosine, the same batch size, accumulation, clipping, precision and threads, no eval and no saving.
Ours packs with EOS separators, position resets (documents do not attend to each other) and keeps the tail.

Throughput: training tokens per second over optimizer steps, timed between step ends in both systems
(the first `--skip` steps and the last one are left out: warm-up, final eval); runs alternate A/B and the
median of `--repeats` is reported, per wall-clock second and per CPU second of the process (on a machine
shared with other work the wall-clock ratio swings with the load; the CPU-time ratio does not). Packing: share of non-padding tokens in our blocks, vs the tokens the
baseline drops and the padding a pad-each-document pipeline would carry.

Run: .venv/bin/python benchmarks/pretrain.py [--steps 30] [--repeats 3] [--model DIR]
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vertical_dag.modeling.packing import pack, tokenize  # noqa: E402
from vertical_dag.modeling.train import TrainConfig, train  # noqa: E402


def load_texts(n: int) -> list[str]:
    files = sorted(glob.glob(str(ROOT / "data/raw/china_law/*.jsonl")))
    texts: list[str] = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            texts.extend(json.loads(line)["text"] for line in fh)
    if not texts:
        rng = np.random.default_rng(0)
        words = ["当事人", "应当", "依照本法", "人民法院", "合同", "履行", "义务", "规定", "赔偿", "责任"]
        texts = [f"第{i}条　" + "".join(rng.choice(words, size=int(rng.integers(5, 80)))) for i in range(n)]
    rng = np.random.default_rng(1)
    return [texts[i] for i in rng.permutation(len(texts))[:n]]


def model_dir(args: argparse.Namespace, tmp: Path) -> Path:
    if args.model:
        return Path(args.model)
    from tests.conftest import cache_root

    tok = cache_root() / "tokenizers" / "smollm2-135m-instruct"
    if not (tok / "tokenizer.json").exists():
        sys.exit(f"no tokenizer at {tok}: run the tests once (fixture tokenizer_dir) or pass --model")
    from vertical_dag.modeling.tiny import build_tiny_llama

    return build_tiny_llama(tok, tmp / "model", hidden=256, layers=4, heads=4, kv_heads=2, intermediate=688)


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds: CPU time of this process is what a shared, busy machine does not distort."""
    return time.perf_counter(), time.process_time()


def steady_tokens_per_s(step_ends: list[tuple[float, float]], tokens_per_step: float, skip: int) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second) over the steady steps (median step gap)."""
    ends = np.array(step_ends)
    gaps = np.diff(ends, axis=0)
    gaps = gaps[skip - 1 : -1] if len(gaps) > skip else gaps
    return tokens_per_step / float(np.median(gaps[:, 0])), tokens_per_step / float(np.median(gaps[:, 1]))


def run_ours(folder: Path, docs: list[np.ndarray], tok, args: argparse.Namespace, tmp: Path) -> tuple[tuple[float, float], dict]:
    from vertical_dag.modeling.load import load_model_folder

    model, _ = load_model_folder(folder)
    data = pack(docs, args.block_size, tok.eos_token_id, tok.pad_token_id)
    val = pack(docs[:8], args.block_size, tok.eos_token_id, tok.pad_token_id)
    cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
                      warmup_steps=2, eval_every=10**9, eval_blocks=1, checkpoint_every=10**9, log_every=10**9, seed=1)
    ends: list[tuple[float, float]] = []
    train(model, data, val, cfg, tmp / f"ckpt-{time.time_ns()}", on_step=lambda s, rec: ends.append(clock()))
    real_per_step = data.real_tokens / data.input_ids.size * args.batch_size * args.grad_accum * args.block_size
    info = {"blocks": len(data), "efficiency": data.efficiency, "parameters": sum(p.numel() for p in model.parameters())}
    return steady_tokens_per_s(ends, real_per_step, args.skip), info


def run_trainer(folder: Path, docs: list[np.ndarray], tok, args: argparse.Namespace, tmp: Path) -> tuple[float, float]:
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    # run_clm's group_texts: concatenate (EOS between documents, as ours) and cut, dropping the remainder
    stream = np.concatenate([np.append(d, tok.eos_token_id) for d in docs])
    n = len(stream) // args.block_size * args.block_size
    blocks = stream[:n].reshape(-1, args.block_size)
    ds = Dataset.from_dict({"input_ids": blocks.tolist()})
    ends: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            ends.append(clock())

    targs = TrainingArguments(
        output_dir=str(tmp / f"hf-{time.time_ns()}"), per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, learning_rate=args.lr, weight_decay=0.1, adam_beta2=0.95,
        max_grad_norm=1.0, lr_scheduler_type="cosine", warmup_steps=2, max_steps=args.steps, logging_steps=10**6,
        save_strategy="no", eval_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(), dataloader_pin_memory=False, seed=1, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=ds, callbacks=[Clock()],
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
    trainer.train()
    return steady_tokens_per_s(ends, args.batch_size * args.grad_accum * args.block_size, args.skip)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both systems (0: torch default)")
    ap.add_argument("--model", default=None, help="HF model folder (default: a small Llama with the SmolLM2 tokenizer)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        folder = model_dir(args, tmp)
        tok = AutoTokenizer.from_pretrained(folder)
        texts = load_texts(args.docs)
        docs = [d for d in tokenize(tok, texts) if len(d)]
        total = sum(len(d) + 1 for d in docs)
        ours, theirs, info = [], [], {}
        for r in range(args.repeats):
            a, info = run_ours(folder, docs, tok, args, tmp)
            b = run_trainer(folder, docs, tok, args, tmp)
            ours.append(a)
            theirs.append(b)
            print(f"repeat {r + 1}: ours {a[0]:.0f} tok/s ({a[1]:.0f} per CPU s), Trainer {b[0]:.0f} tok/s "
                  f"({b[1]:.0f} per CPU s)", flush=True)
    dropped = total % args.block_size
    per_doc_padded = sum(-(-(len(d) + 1) // args.block_size) * args.block_size for d in docs)
    result = {
        "model_parameters": info["parameters"],
        "documents": len(docs), "tokens": total, "block_size": args.block_size, "batch_size": args.batch_size,
        "grad_accum": args.grad_accum, "steps": args.steps, "threads": torch.get_num_threads(),
        "tokens_per_s_ours": round(statistics.median(x[0] for x in ours), 1),
        "tokens_per_s_trainer": round(statistics.median(x[0] for x in theirs), 1),
        "ratio_wall": round(statistics.median(x[0] for x in ours) / statistics.median(x[0] for x in theirs), 3),
        "tokens_per_cpu_s_ours": round(statistics.median(x[1] for x in ours), 1),
        "tokens_per_cpu_s_trainer": round(statistics.median(x[1] for x in theirs), 1),
        "ratio_cpu": round(statistics.median(x[1] for x in ours) / statistics.median(x[1] for x in theirs), 3),
        "packing_efficiency_ours": round(info["efficiency"], 5),
        "trainer_group_texts_dropped_tokens": int(dropped),
        "pad_per_document_efficiency": round(total / per_doc_padded, 4),
        "document_masking_ours": True,
        "document_masking_trainer": False,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
