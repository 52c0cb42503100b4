"""Supervised fine-tuning: exact response-only labels, packing isolation, task generation, full and LoRA runs."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from vertical_dag.modeling import sft
from vertical_dag.modeling import tasks as T
from vertical_dag.modeling.packing import IGNORE, PAD_SOURCE, pack_whole
from vertical_dag.modeling.task_files import BadRecord, parse_record
from vertical_dag.plugins import load_registry
from vertical_dag.project import Project
from vertical_dag.records import read_json, read_ledger
from vertical_dag.stages.context import run_stage

LAWS = [("中华人民共和国民法典", "民法商法", "现行有效"), ("中华人民共和国刑法", "刑法", "现行有效"),
        ("中华人民共和国合同法", "民法商法", "已废止")]
NUMS = "一二三四五六七八九十"


def law_docs(n_per_law: int = 20) -> list[dict]:
    rows = []
    for li, (law, dept, status) in enumerate(LAWS):
        for i in range(n_per_law):
            no = f"第{NUMS[i % 10]}{'' if i < 10 else '十'}条"
            body = f"为了保护{dept}关系当事人的合法权益，{law[7:]}规定第{i}项内容，当事人的合法权益受法律保护，维护秩序。"
            meta = {"law_name": law, "article_no": no, "article_no_arabic": i + 1, "status": status,
                    "law_department": dept, "chapter": "第一章 总则", "publish_date": "2020-05-28"}
            split = "test" if i % 5 == 0 else "validation" if i % 5 == 1 else "train"
            rows.append({"doc_id": f"d{li}_{i}", "source": "law", "uri": f"law.jsonl:{i}", "batch": "2020s",
                         "text": f"{no}　{body}", "lang": "zh", "meta": json.dumps(meta, ensure_ascii=False), "split": split})
    return rows


def write_splits(root: Path, rows: list[dict]) -> None:
    (root / "data/splits").mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        part = [r for r in rows if r["split"] == split]
        pq.write_table(pa.Table.from_pylist(part), root / f"data/splits/{split}.parquet")


def make_project(root: Path, tokenizer_dir: Path, *, finetune: dict | None = None, evaluate: dict | None = None,
                 models: tuple[str, ...] = ("base", "pretrained")) -> Project:
    """A project folder with splits, tiny base/pretrained models and small-run params."""
    from vertical_dag.modeling.tiny import build_tiny_llama

    root.mkdir(parents=True, exist_ok=True)
    ft = {"max_steps": 4, "block_size": 192, "max_train_items": 24, "eval_items_per_task": 4, "lr": 3e-3,
          "max_context_chars": 40, "max_answer_chars": 40, "system_prompt": "你是法律助手。", "checkpoint_every": 2,
          **(finetune or {})}
    ev = {"max_test_docs": 8, "max_general_docs": 8, "max_doc_chars": 40, "max_task_items": 8, "held_out_samples": 2,
          "max_free_answer_items": 2, "bootstrap_samples": 200, "sample_max_new_tokens": 4,
          "sample_prompts": ["《中华人民共和国刑法》第一条规定了什么？"], **(evaluate or {})}
    params = {"project": {"name": "t", "domain": "legal", "plugins": ["vertical_dag_china_law"]}, "finetune": ft, "evaluate": ev}
    (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    (root / "dvc.yaml").write_text("stages: {}\n")
    write_splits(root, law_docs())
    for i, name in enumerate(models):
        build_tiny_llama(tokenizer_dir, root / f"data/models/{name}/model", seed=i, max_positions=512)
    return Project(root)


# ---------------------------------------------------------------- masking and packing


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def test_labels_cover_exactly_the_response_tokens(tok):
    msgs = [{"role": "user", "content": "《民法典》第一条规定了什么？"}, {"role": "assistant", "content": "为了保护民事主体的合法权益。"}]
    ids, labels = sft.encode_chat(tok, msgs, "你是法律助手。")
    full = tok.apply_chat_template(sft.with_system(msgs, "你是法律助手。"), tokenize=False)
    assert ids == tok(full, add_special_tokens=False)["input_ids"]  # same tokens as rendering the whole chat
    answer = tok("为了保护民事主体的合法权益。<|im_end|>", add_special_tokens=False)["input_ids"]
    learned = [i for i, lab in enumerate(labels) if lab != IGNORE]
    assert learned == list(range(learned[0], learned[0] + len(answer)))  # one contiguous span
    assert [ids[i] for i in learned] == answer and [labels[i] for i in learned] == answer
    prompt = sft.prompt_ids(tok, msgs[:1], "你是法律助手。")
    assert ids[: len(prompt)] == prompt and learned[0] == len(prompt)  # nothing of the prompt is a target


def test_multi_turn_labels_every_assistant_turn(tok):
    msgs = [{"role": "user", "content": "a?"}, {"role": "assistant", "content": "first"},
            {"role": "user", "content": "b?"}, {"role": "assistant", "content": "second"}]
    ids, labels = sft.encode_chat(tok, msgs)
    learned = tok.decode([lab for lab in labels if lab != IGNORE])
    assert learned == "first<|im_end|>second<|im_end|>"


def test_fallback_layout_without_chat_template(tok):
    from copy import deepcopy

    plain = deepcopy(tok)
    plain.chat_template = None
    ids, labels = sft.encode_chat(plain, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "answer"}])
    assert tok.decode([lab for lab in labels if lab != IGNORE]) == "answer<|im_end|>"
    assert "### Response:" in tok.decode(ids)


def test_pack_whole_keeps_examples_whole_first_fit_and_targets_only_responses():
    ex = [([1, 2, 3, 4, 5], [IGNORE, IGNORE, 3, 4, 5]), ([6, 7, 8, 9, 10, 11], [IGNORE, 7, 8, 9, 10, 11]),
          ([14, 15, 16], [IGNORE, IGNORE, 16]), ([12, 13], [IGNORE, 13])]
    p = pack_whole(ex, block_size=8, pad_id=0)
    # first fit: 5 -> block 0; 6 does not fit there -> block 1; 3 fills block 0; 2 fills block 1
    assert p.input_ids.tolist() == [[1, 2, 3, 4, 5, 14, 15, 16], [6, 7, 8, 9, 10, 11, 12, 13]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 2, 3, 4, 5, 0, 1]]
    assert p.documents == 4 and p.real_tokens == 16
    labels = p.labels(slice(None)).tolist()
    assert labels == [[IGNORE, IGNORE, 3, 4, 5, IGNORE, IGNORE, 16], [IGNORE, 7, 8, 9, 10, 11, IGNORE, 13]]
    apart = pack_whole(ex[:2], block_size=8, pad_id=0, packing=False)
    assert apart.input_ids.tolist() == [[1, 2, 3, 4, 5, 0, 0, 0], [6, 7, 8, 9, 10, 11, 0, 0]]
    assert (apart.source[0, 5:] == PAD_SOURCE).all() and (apart.labels(slice(None))[0, 5:] == IGNORE).all()
    assert apart.position_ids[0, 5:].tolist() == [0, 1, 2]  # padding opens a segment of its own
    with pytest.raises(ValueError, match="longer than block_size 4"):
        pack_whole(ex, block_size=4, pad_id=0)


def test_packed_examples_do_not_attend_to_each_other(tok, tokenizer_dir, tmp_path):
    from vertical_dag.modeling.load import load_model_folder
    from vertical_dag.modeling.tiny import build_tiny_llama

    model, _ = load_model_folder(build_tiny_llama(tokenizer_dir, tmp_path / "m"))
    model.eval()
    a = sft.encode_chat(tok, [{"role": "user", "content": "甲"}, {"role": "assistant", "content": "乙"}])
    b = sft.encode_chat(tok, [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}])
    p = pack_whole([a, b], 128, tok.pad_token_id)
    assert len(p) == 1 and p.position_ids[0, len(a[0])] == 0
    assert (p.labels(slice(None))[0, len(a[0]) + len(b[0]):] == IGNORE).all()  # padding is never a target
    ids, pos = torch.from_numpy(p.input_ids.astype("int64")), torch.from_numpy(p.position_ids.astype("int64"))
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits
        alone = model(input_ids=torch.tensor([b[0]]), use_cache=False).logits
    assert torch.allclose(packed[0, len(a[0]):len(a[0]) + len(b[0])], alone[0], atol=1e-4)


# ---------------------------------------------------------------- tasks and user records


LAW = load_registry(["vertical_dag_china_law"])  # the example's plugin: its tasks and document fields


def law_tasks(docs: list[T.Doc], names: tuple[str, ...] | None = None, **kw) -> dict[str, list[T.TaskItem]]:
    gens = {k: v for k, v in LAW.tasks.items() if names is None or k in names}
    return T.generate_tasks(docs, gens, fields=LAW.doc_fields, **kw)


def test_tasks_are_corpus_facts_and_respect_splits():
    docs = T.docs_from_rows(law_docs())
    by_task = law_tasks(docs, seed=1)
    assert set(by_task) >= {"article_lookup", "law_department", "in_force", "heading_passage", "continuation", "fill_in"}
    lookup = by_task["article_lookup"][0]
    doc = next(d for d in docs if d.doc_id == lookup.doc_id)
    cfg = T.TaskConfig(fields=LAW.doc_fields)
    assert lookup.prompt == f"《{doc.meta['law_name']}》{doc.meta['article_no']}规定了什么？"
    assert lookup.response == T.body(doc, cfg) and not lookup.response.startswith("第")
    for it in by_task["in_force"]:
        d = next(x for x in docs if x.doc_id == it.doc_id)
        assert it.response == ("现行有效" if d.meta["status"] == "现行有效" else "已失效")
    for it in by_task["fill_in"]:
        assert "____" in it.prompt and it.response in T.body(next(x for x in docs if x.doc_id == it.doc_id), cfg)
    test_items = T.eval_sample({t: [i for i in v if i.split == "test"] for t, v in by_task.items()}, 3, seed=1)
    assert test_items and all(i.split == "test" for i in test_items)
    lookups = [i for i in test_items if i.task == "article_lookup"]
    assert all(i.options and i.options[i.answer_index] == i.response and len(i.options) == 4 for i in lookups)
    mixed, _ = T.mix({t: [i for i in v if i.split == "train"] for t, v in by_task.items()},
                     {"article_lookup": 3.0, "in_force": 1.0}, 20, seed=1)
    counts = {t: sum(1 for i in mixed if i.task == t) for t in ("article_lookup", "in_force")}
    assert len(mixed) == 20 and counts == {"article_lookup": 15, "in_force": 5}


def test_distractors_follow_each_passage_tasks_policy():
    """Lookup/heading offer other laws' articles (same branch first); continuations offer the same law's."""
    docs = T.docs_from_rows(law_docs())
    by_task = law_tasks(docs, ("article_lookup", "heading_passage", "continuation"), seed=1)
    law_of = {it.response: it.meta["group"] for v in by_task.values() for it in v}
    dept_of = {law: dept for law, dept, _ in LAWS}
    items = T.eval_sample({t: [i for i in v if i.split == "test"] for t, v in by_task.items()}, 4, seed=1)
    assert {it.task for it in items} == {"article_lookup", "heading_passage", "continuation"}
    for it in items:
        law = it.meta["group"]
        distractors = [o for k, o in enumerate(it.options) if k != it.answer_index]
        assert len(distractors) == 3 and it.response not in distractors
        laws = [law_of[o] for o in distractors]
        if it.task == "continuation":
            assert laws == [law] * 3
        else:
            assert law not in laws
            # the one other law of the same branch comes first; the rest are any other law
            same_branch = [lw for lw, d, _ in LAWS if d == dept_of[law] and lw != law]
            if same_branch:
                assert same_branch[0] in laws


def test_label_tasks_are_sampled_balanced_over_their_labels():
    """A label task's majority label (here 2 of 3 laws in force) gets no larger share of the eval set or the mix."""
    docs = T.docs_from_rows(law_docs())
    by_task = law_tasks(docs, ("in_force", "law_department"), seed=1)
    statuses = [it.response for it in by_task["in_force"]]
    assert statuses.count("现行有效") == 2 * statuses.count("已失效")  # the corpus is unbalanced
    for sample in (T.eval_sample(by_task, 10, seed=3), T.mix(by_task, {"in_force": 1.0, "law_department": 1.0}, 20, 3)[0]):
        for task in ("in_force", "law_department"):
            counts = sorted(collections.Counter(it.response for it in sample if it.task == task).values())
            assert counts and counts[-1] - counts[0] <= 1, (task, counts)
    assert not T.is_label_task(by_task["in_force"][:1]) and T.is_label_task(by_task["law_department"])


@pytest.mark.parametrize("record,reason", [
    ({"instruction": "", "output": "x"}, "missing instruction"),
    ({"instruction": "q"}, "missing output"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "start with a user turn"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}, "role"),
    ({"question": "q", "choices": ["a", "b"], "answer": 5}, "not an index, a choice or a letter"),
    ({"question": "q", "A": "a", "B": "b", "answer": "AB"}, "several options"),
    (["not", "an", "object"], "not an object"),
])
def test_malformed_user_records_are_refused_with_a_reason(record, reason):
    with pytest.raises(BadRecord, match=reason):
        parse_record(record)


# ---------------------------------------------------------------- training


def _user_file(root: Path) -> None:
    (root / "instructions").mkdir()
    (root / "instructions/mine.jsonl").write_text("\n".join([
        json.dumps({"instruction": "什么是民法？", "output": "民法是调整平等主体之间关系的法律。"}, ensure_ascii=False),
        json.dumps({"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]}, ensure_ascii=False),
        "{not json",
        json.dumps({"instruction": "缺少答案"}, ensure_ascii=False),
    ]) + "\n", encoding="utf-8")


@pytest.mark.parametrize("method", ["lora", "full"])
def test_lora_and_full_train_a_tiny_model_into_a_standalone_checkpoint(method, tmp_path, tokenizer_dir):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    proj = make_project(tmp_path / "p", tokenizer_dir, finetune={
        "method": method, "instruction_files": ["instructions/*.jsonl"], "task_weights": {
            "user": 5.0, "article_lookup": 1.0, "law_department": 1.0, "in_force": 1.0, "fill_in": 1.0}})
    _user_file(proj.root)
    m = run_stage("finetune", proj, gate=False)
    out = proj.root / "data/models/finetuned"
    # conservation, and the malformed lines quarantined with file:line and a reason
    assert m["documents_in"] == m["documents_out"] + m["dropped"] + m["quarantined"]
    assert m["quarantined"] == 2 and m["drops_by_reason"]["bad_json"] == 1 and m["drops_by_reason"]["bad_record"] == 1
    ledger = read_ledger(out / "ledger").to_pylist()
    assert {r["doc_id"] for r in ledger if r["action"] == "quarantined"} == {"mine.jsonl:3", "mine.jsonl:4"}
    assert m["train_items_by_task"]["user"] == 2
    # trained: loss went down, curve written
    assert m["steps"] == 4 and m["final_train_loss"] < m["first_train_loss"]
    assert (out / "loss.csv").read_text().count("\n") == 5
    # eval items only from test documents, never trained on
    train_docs = {json.loads(x)["doc_id"] for x in (out / "tasks/train.jsonl").read_text().splitlines()}
    eval_items = T.read_items(out / "tasks/eval.jsonl")
    assert eval_items and all(i.split == "test" for i in eval_items) and not train_docs & {i.doc_id for i in eval_items}
    # the checkpoint is a plain model: no adapter weights, reloads without peft, and differs from its start
    with safe_open(str(out / "model/model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert not any("lora" in k for k in keys)
        tuned = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
    with safe_open(str(proj.root / "data/models/pretrained/model/model.safetensors"), "pt") as f:
        start = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
    assert not torch.equal(tuned, start)
    reloaded = AutoModelForCausalLM.from_pretrained(str(out / "model"))
    assert type(reloaded).__name__ == "LlamaForCausalLM"
    assert m["trainable_parameters"] < 200_000 if method == "lora" else m["trainable_parameters"] > 1_000_000
    assert m["val_loss"] < m["val_loss_base"]  # held-out responses: the loss on validation items fell
    assert m["target_tokens"] < m["tokens"]  # prompts are read, only responses are scored
    assert not (out / "checkpoint").exists()  # the resume state is gone once the model is written


def _sft_case(folder, tok, lora: bool):
    """A model (LoRA-wrapped or not), packed examples and settings shared by the straight and resumed runs."""
    from vertical_dag.modeling.load import load_model_folder
    from vertical_dag.modeling.train import TrainConfig

    items = law_tasks(T.docs_from_rows(law_docs(4)), ("in_force", "law_department"), max_context_chars=20, seed=0)
    ex = [sft.encode_chat(tok, it.chat()) for v in items.values() for it in v]
    data, val = pack_whole(ex[2:], 160, tok.pad_token_id), pack_whole(ex[:2], 160, tok.pad_token_id)
    torch.manual_seed(0)
    model = load_model_folder(folder)[0]
    if lora:
        model = sft.wrap_lora(model, r=4, alpha=8, dropout=0.1, target_modules="all-linear")
    cfg = TrainConfig(max_steps=4, batch_size=2, checkpoint_every=2, lr=1e-3, warmup_steps=1, eval_every=4,
                      eval_blocks=len(val), weight_decay=0.0)
    return model, data, val, cfg


@pytest.mark.parametrize("lora", [True, False])
def test_sft_on_the_shared_loop_resumes_after_a_crash(lora, tmp_path, tok, tokenizer_dir, caplog):
    import logging

    from safetensors.torch import load_file

    from vertical_dag.modeling.tiny import build_tiny_llama
    from vertical_dag.modeling.train import train

    torch.set_num_threads(1)
    folder = build_tiny_llama(tokenizer_dir, tmp_path / "m", hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64)
    model, data, val, cfg = _sft_case(folder, tok, lora)
    with caplog.at_level(logging.INFO, logger="vertical_dag.modeling.train"):
        straight = train(model, data, val, cfg, tmp_path / "straight")
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert len(progress) == 4 and "step 1/4 loss" in progress[0] and "tok/s" in progress[0]  # as pretraining shows it

    class Crash(Exception):
        pass

    def crash(step, rec):
        if step == 3:
            raise Crash

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Crash):
        train(*_sft_case(folder, tok, lora), ckpt, on_step=crash)
    assert read_json(ckpt / "latest.json")["step"] == 2
    saved = load_file(ckpt / "step-0000002" / "model.safetensors")
    assert all("lora_" in k for k in saved) if lora else "model.embed_tokens.weight" in saved  # only what trains
    model_b, data_b, val_b, cfg_b = _sft_case(folder, tok, lora)
    resumed = train(model_b, data_b, val_b, cfg_b, ckpt)
    assert resumed.resumed_from == 2 and straight.resumed_from is None
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history], abs=1e-6)
    assert resumed.metrics["val_perplexity_final"] == pytest.approx(straight.metrics["val_perplexity_final"], rel=1e-6)
    assert straight.metrics["target_tokens_trained"] < straight.metrics["tokens_trained"]
    plain = sft.merge_lora(model_b) if lora else model_b
    assert not any("lora" in n for n, _ in plain.named_parameters())
