"""GPU benchmark, second part: LoRA fine-tuning of a pretrained copy on generated task items, the merge, a
save/load round trip as the finetune stage and `vertical-dag generate` do them, and generation, all on the GPU.
Called by benchmarks/gpu_train.py after the pretraining variants.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from gpu_assets import ROOT, peak_gib, read_split, reset_memory, section

from vertical_dag.modeling import sft
from vertical_dag.modeling.generate import GenerationSettings, generate_one, load_for_inference
from vertical_dag.modeling.load import write_model_folder
from vertical_dag.modeling.packing import pack_whole
from vertical_dag.modeling.train import TrainConfig, train


def task_items(assets: Path, ft: dict[str, Any], n_docs: int | None, seed: int) -> tuple[list[Any], str]:
    """Instruction items generated from train documents by the project's task builders."""
    from vertical_dag.modeling import tasks as T
    from vertical_dag.plugins import load_registry

    registry = load_registry(["vertical_dag_china_law"])  # the example's plugin, as params.yaml registers it
    rows = read_split(assets, "train", n_docs)
    for r in rows:
        r["split"] = "train"
    docs = T.docs_from_rows(rows)
    by_task = T.generate_tasks(docs, registry.tasks, fields=registry.doc_fields,
                               max_context_chars=int(ft.get("max_context_chars", 60)),
                               max_answer_chars=int(ft.get("max_answer_chars", 100)), seed=seed)
    weights = {k: float((ft.get("task_weights") or {}).get(k, 1.0)) for k in registry.task_names}
    items, _ = T.mix(by_task, weights, int(ft.get("max_train_items", 120)), seed)
    return items, ",".join(sorted({it.task for it in items}))


def run_sft_and_generate(base: Any, assets: Path, ft: dict[str, Any], steps: int, n_docs: int | None, work: Path,
                         device: torch.device, max_new_tokens: int | None) -> dict[str, Any]:
    from transformers import AutoTokenizer

    out: dict[str, Any] = {}
    tok = AutoTokenizer.from_pretrained(str(assets / "model"))
    seed = int(ft.get("seed", 1234))
    items, tasks = task_items(assets, ft, n_docs, seed)
    system = ft.get("system_prompt")
    block = int(ft.get("block_size", 512))
    examples = [e for e in (sft.encode_chat(tok, it.chat(), system) for it in items) if len(e[0]) <= block]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    blocks = pack_whole(examples, block, pad, bool(ft.get("packing", True)))
    probe = pack_whole(examples[:8], block, pad, bool(ft.get("packing", True)))  # scored before and after
    dtype = torch.bfloat16  # finetune.dtype: bfloat16, the GPU setting (bf16 weights; LoRA adapters stay fp32)
    method = str(ft.get("method", "lora"))
    cfg = TrainConfig(max_steps=steps, batch_size=int(ft.get("batch_size", 1)), grad_accum=int(ft.get("grad_accum", 1)),
                      lr=float(ft.get("lr", 2e-4)), min_lr_ratio=float(ft.get("min_lr_ratio", 0.1)),
                      warmup_steps=min(int(ft.get("warmup_steps", 5)), max(0, steps // 4)),
                      weight_decay=float(ft.get("weight_decay", 0.0)), grad_clip=float(ft.get("grad_clip", 1.0)),
                      eval_every=steps, eval_blocks=len(probe), checkpoint_every=max(1, steps // 2), seed=seed,
                      device=device.type, precision=str(ft.get("precision", "auto")))
    model = copy.deepcopy(base).to(dtype=dtype).to(device)
    if method == "lora":
        torch.manual_seed(seed)
        model = sft.wrap_lora(model, r=int(ft.get("lora_r", 16)), alpha=float(ft.get("lora_alpha", 32)),
                              dropout=float(ft.get("lora_dropout", 0.05)),
                              target_modules=ft.get("lora_target_modules", "all-linear"))
    reset_memory(device)
    started = time.perf_counter()
    res = train(model, blocks, probe, cfg, work / "sft_checkpoint")
    merged = sft.merge_lora(model) if method == "lora" else model
    losses = [h["loss"] for h in res.history]
    m = res.metrics
    probe_before = math.log(m["val_perplexity_base"]) if m["val_perplexity_base"] else None
    probe_after = math.log(m["val_perplexity_final"]) if m["val_perplexity_final"] else None
    out["sft"] = {
        "method": method, "dtype": str(dtype).replace("torch.", ""), "precision": m["precision"], "items": len(items),
        "tasks": tasks, "examples": len(examples), "blocks": len(blocks), "block_size": block, "steps": m["steps"],
        "trainable_parameters": m["trainable_parameters"], "tokens_per_s": m["tokens_per_s"],
        "seconds": m["train_seconds"], "wall_s": round(time.perf_counter() - started, 1),
        "peak_gpu_gib": peak_gib(device), "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None, "losses": losses,
        "probe_loss_before": probe_before, "probe_loss_after": probe_after,
        "loss_finite": all(math.isfinite(x) for x in losses),
        "loss_falls": probe_before is not None and probe_after is not None and probe_after < probe_before,
        "merged_plain_model": not any("lora" in n for n, _ in merged.named_parameters()),
        "merged_device": str(next(merged.parameters()).device),
    }
    print(f"sft: {json.dumps({k: v for k, v in out['sft'].items()}, ensure_ascii=False)}", flush=True)

    # the merged model saved as the finetune stage saves it, loaded back as `vertical-dag generate` loads it
    folder = work / "finetuned"
    write_model_folder(merged, tok, folder)
    del merged, model
    reset_memory(device)
    gen_model, gen_tok = load_for_inference(folder)
    gen_model.to(device)
    g = section(ROOT / "params.yaml", "finetune").get("generation") or {}
    settings = GenerationSettings(mode=str(g.get("mode", "greedy")),
                                  max_new_tokens=max_new_tokens or int(g.get("max_new_tokens", 128)),
                                  repetition_penalty=float(g.get("repetition_penalty", 1.1)),
                                  stop=list(g.get("stop") or []), system_prompt=system, seed=seed)
    prompt = items[0].prompt if items else "《中华人民共和国民法典》第一条规定了什么？"
    started = time.perf_counter()
    res_g = generate_one(gen_model, gen_tok, prompt, settings)
    seconds = time.perf_counter() - started
    out["generate"] = {**res_g, "device": str(gen_model.device), "seconds": round(seconds, 2),
                       "new_tokens_per_s": round(res_g["new_tokens"] / max(seconds, 1e-9), 1)}
    print(f"generate: {json.dumps(out['generate'], ensure_ascii=False)}", flush=True)
    return out
