"""Evaluation: sane numbers on tiny models, MC scoring and perplexity checked by hand, report == metrics.json."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from vertical_dag.modeling import evaluate as E
from vertical_dag.modeling.report import fmt
from vertical_dag.records import read_json
from vertical_dag.stages.context import run_stage

from .test_finetune import make_project

BENCH_ARRAY = [  # a JSON array as a Chinese legal benchmark ships it: options inside the question, free answers
    {"instruction": "请回答下面的单项选择题。", "question": "盗窃罪属于哪一类犯罪？A:侵犯财产罪;B:危害公共安全罪;C:渎职罪",
     "answer": "正确答案：A。"},
    {"instruction": "请回答。", "question": "合同成立的要件是什么？", "answer": "当事人意思表示一致。"},
    {"instruction": "请回答下面的单项选择题。", "question": "下列哪项正确？A:甲;B:乙", "answer": "正确答案：AB。"},
]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("eval") / "p"
    proj = make_project(root, tokenizer_dir, evaluate={"general_corpus": "general.txt", "eval_files": ["evals/*"]})
    (root / "general.txt").write_text("\n".join(f"The quick brown fox {i} jumps over the lazy dog near the river bank."
                                                for i in range(20)))
    (root / "evals").mkdir()
    (root / "evals/mine.jsonl").write_text("\n".join([
        json.dumps({"question": "刑法属于哪个部门？", "choices": ["刑法", "民法商法"], "answer": 0}, ensure_ascii=False),
        json.dumps({"instruction": "说出一个法律部门", "output": "刑法"}, ensure_ascii=False), "{bad"]), encoding="utf-8")
    (root / "evals/bench.json").write_text(json.dumps(BENCH_ARRAY, ensure_ascii=False), encoding="utf-8")
    run_stage("finetune", proj, gate=False)
    return proj, run_stage("evaluate", proj, gate=False)


def test_three_models_side_by_side_with_intervals(evaluated):
    proj, m = evaluated
    assert set(m["models"]) == {"base", "pretrained", "finetuned"}
    for name, row in m["models"].items():
        # a random tiny model is about as good as uniform over the 49,152-token vocabulary
        assert 5_000 < row["domain_ppl"] < 500_000, name
        # ppl and bpc describe the same total log-likelihood
        assert math.log(row["domain_ppl"]) * row["domain_tokens"] == pytest.approx(
            row["domain_bpc"] * math.log(2) * row["domain_chars"], rel=1e-3)
        for key in ("domain_bpc", "general_bpc", "task_accuracy"):
            lo, hi = row[f"{key}_ci"]
            assert lo <= row[key] <= hi, (name, key)
        assert row["domain_docs"] == 8 and row["domain_chars"] <= 8 * 40  # sampled documents, cut to max_doc_chars
        assert row["task_items"] == 8 and set(row["tasks"]) <= {"article_lookup", "law_department", "in_force",
                                                                 "heading_passage", "continuation", "fill_in"}
        assert row["user_eval_items"] == 4
    assert "gates" not in m  # the stage reports numbers; the quality layer judges them
    assert m["documents_in"] == m["documents_out"] + m["dropped"] + m["quarantined"] and m["dropped"] == 0
    # paired differences overall and per task over the same items, and in bits/char over the same documents
    cmp = m["comparisons"]["finetuned - base"]
    per_model = {k: m["models"][k]["tasks"] for k in ("base", "finetuned")}
    assert set(cmp["tasks"]) == set(per_model["base"])
    for task, c in cmp["tasks"].items():
        assert c["n"] == per_model["base"][task]["n"]
        assert c["diff"] == pytest.approx(per_model["finetuned"][task]["accuracy"] - per_model["base"][task]["accuracy"], abs=1e-3)
        assert c["ci"][0] <= c["diff"] <= c["ci"][1]
    bpc = m["comparisons"]["pretrained - base"]["domain_bpc"]
    assert bpc["diff"] == pytest.approx(m["models"]["pretrained"]["domain_bpc"] - m["models"]["base"]["domain_bpc"], abs=2e-4)
    assert bpc["ci"][0] <= bpc["diff"] <= bpc["ci"][1] and bpc["n"] == 8


def test_user_benchmarks_are_scored_per_file_and_bad_records_counted(evaluated):
    proj, m = evaluated
    mine, bench = m["user_eval"]["evals/mine.jsonl"], m["user_eval"]["evals/bench.json"]
    assert mine["container"] == "jsonl" and mine["layouts"] == {"choice_list": 1, "free_answer": 1}
    assert mine["bad_records"] == 1 and mine["bad_by_reason"] == {"bad_json": 1}
    assert bench["container"] == "json_array" and bench["layouts"] == {"options_in_text": 1, "free_answer": 1}
    assert bench["bad_records"] == 1 and "several options" in bench["bad_examples"][0]
    assert m["user_eval_bad_records"] == 2 and "bench.json: 1 bad record" in m["note"]
    for f in (mine, bench):
        for name, r in f["models"].items():
            assert r["choice_items"] == 1 and r["free_items"] == 1 and r["accuracy"] in (0.0, 1.0), name
            assert 0 <= r["rouge_l_ci"][0] <= r["rouge_l"] <= r["rouge_l_ci"][1] <= 1
    page = (proj.root / "data/reports/eval/report.html").read_text(encoding="utf-8")
    assert "<td>evals/bench.json</td>" in page and "options_in_text 1" in page


def test_samples_are_held_out_items_with_their_reference(evaluated):
    proj, m = evaluated
    held = [s for s in m["samples"] if s["reference"] is not None]
    items = {it["prompt"]: it for it in map(json.loads, (proj.root / "data/models/finetuned/tasks/eval.jsonl").read_text().splitlines())}
    assert len(held) == 2 and all(items[s["prompt"]]["response"] == s["reference"] for s in held)
    assert all(items[s["prompt"]]["split"] == "test" for s in held)
    assert m["samples"][-1]["prompt"].startswith("《中华人民共和国刑法》") and "finetuned" in m["samples"][-1]
    page = (proj.root / "data/reports/eval/report.html").read_text(encoding="utf-8")
    assert all(s["reference"] in page.replace("&quot;", '"') for s in held)


def test_report_shows_the_three_models_and_matches_metrics_json(evaluated):
    proj, m = evaluated
    out = proj.root / "data/reports/eval"
    saved = read_json(proj.root / "data/metrics/evaluate.json")  # the one metrics file (DVC metrics, the report)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert saved["models"] == m["models"]
    for name in ("base", "pretrained", "finetuned"):
        assert f"<th>{name}</th>" in page
        for key in ("domain_bpc", "domain_ppl", "general_bpc", "task_accuracy"):
            assert fmt(saved["models"][name][key]) in page, (name, key)
    headline = re.search(r"<h2>Headline</h2><table>(.*?)</table>", page).group(1)
    row = re.search(r"<td>domain bits/char</td>(.*?)</tr>", headline).group(1)
    assert re.findall(r"<td>([^<]*)</td>", row) == [fmt(saved["models"][n]["domain_bpc"]) for n in ("base", "pretrained", "finetuned")]
    ci_row = re.search(r"<td>domain bits/char CI</td>(.*?)</tr>", headline).group(1)
    assert re.findall(r"<td>([^<]*)</td>", ci_row)[0] == f"[{fmt(saved['models']['base']['domain_bpc_ci'][0])}, " \
                                                           f"{fmt(saved['models']['base']['domain_bpc_ci'][1])}]"
    assert page.count("data:image/png;base64,") >= 3 and "http://" not in page and "https://" not in page
    assert "Model gates" not in page  # no gates entry in the metrics: the section is left out
    acc_csv = (proj.root / "data/plots/evaluate_task_accuracy.csv").read_text().splitlines()
    assert acc_csv[0] == "model,task_accuracy" and acc_csv[1:] == [f"{n},{saved['models'][n]['task_accuracy']}"
                                                                   for n in ("base", "pretrained", "finetuned")]
    assert (proj.root / "data/plots/finetune_loss.csv").read_text().startswith("step,loss")


def test_a_gates_entry_in_the_metrics_is_shown_as_it_is():
    from vertical_dag.modeling.report import render_report

    models = {"base": {"domain_bpc": 2.0, "task_accuracy": 0.5}, "finetuned": {"task_accuracy": 0.5}}
    gates = {"finetuned_beats_base_task_accuracy": {"success": False, "observed": 0.0, "bound": 0.0, "description": "d"},
             "pretrained_beats_base_domain_bpc": {"success": True, "observed": 0.1, "bound": 0.0, "description": "d"}}
    page = render_report({"models": models, "gates": gates}, {})
    assert "<td>finetuned_beats_base_task_accuracy</td><td><span class='fail'>FAIL" in page
    assert "<td>pretrained_beats_base_domain_bpc</td><td><span class='pass'>pass" in page


def test_text_nll_and_option_scores_match_a_direct_computation(tokenizer_dir, tmp_path):
    from vertical_dag.modeling.load import load_model_folder
    from vertical_dag.modeling.sft import prompt_ids
    from vertical_dag.modeling.tiny import build_tiny_llama

    model, tok = load_model_folder(build_tiny_llama(tokenizer_dir, tmp_path / "m"))
    model.eval()
    texts = ["第一条　为了保护民事主体的合法权益。", "Short.", "第二条　民法调整平等主体的自然人、法人之间的人身关系和财产关系。"]
    s = E.score_texts(model, tok, texts, batch_size=2)  # one batch holds texts of different lengths (padding)
    for i, text in enumerate(texts):
        ids = [tok.eos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
        assert s.tokens[i] == len(ids) - 1 and s.chars[i] == len(text)
        assert s.nll[i] == pytest.approx(float(loss) * (len(ids) - 1), rel=1e-4)
    windows = E.score_texts(model, tok, texts, max_window=8)
    assert (windows.tokens == s.tokens).all()  # short windows still score every token once
    assert s.bpc == pytest.approx(s.nll.sum() / math.log(2) / s.chars.sum())
    prompt = prompt_ids(tok, [{"role": "user", "content": "哪个？"}])
    options = ["刑法", "民法商法", "诉讼与非诉讼程序法"]
    whole = E.option_logprobs(model, tok, prompt, options)  # total log-likelihood, end of turn included
    prefix = E.option_logprobs(model, tok, prompt, options, end=False)
    for opt, got, got_prefix in zip(options, whole, prefix, strict=True):
        for suffix, value in (("<|im_end|>", got), ("", got_prefix)):
            full = prompt + tok(opt + suffix, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                lp = model(input_ids=torch.tensor([full])).logits[0, :-1].log_softmax(-1)
            want = float(lp[torch.arange(len(prompt) - 1, len(full) - 1), torch.tensor(full[len(prompt):])].sum())
            assert value == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_passage_options_are_scored_by_pmi_against_a_neutral_prompt(tokenizer_dir, tmp_path):
    from vertical_dag.modeling.load import load_model_folder
    from vertical_dag.modeling.sft import prompt_ids
    from vertical_dag.modeling.tasks import TaskItem
    from vertical_dag.modeling.tiny import build_tiny_llama

    model, tok = load_model_folder(build_tiny_llama(tokenizer_dir, tmp_path / "m"))
    model.eval()
    prompt = prompt_ids(tok, [{"role": "user", "content": "《中华人民共和国刑法》第一条规定了什么？"}])
    neutral = prompt_ids(tok, [{"role": "user", "content": ""}])
    options = ["为了惩罚犯罪，保护人民，根据宪法，制定本法。", "本法自公布之日起施行。", "本法自公布之日起施行。"]
    cache: dict[str, float] = {}
    got = E.passage_pmi(model, tok, prompt, neutral, options, cache)
    cond = E.option_logprobs(model, tok, prompt, options, end=False)
    prior = E.option_logprobs(model, tok, neutral, options, end=False)
    assert got == pytest.approx([c - p for c, p in zip(cond, prior, strict=True)], abs=1e-4)
    assert set(cache) == set(options)  # one neutral score per distinct option, reused for later items
    # score_items uses it for passage tasks: the pick is the option with the highest PMI, not the shortest one
    item = TaskItem("article_lookup", "《中华人民共和国刑法》第一条规定了什么？", options[0], options=options[:2], answer_index=0,
                    meta={"distractors": "other_group"})
    (res,) = E.score_items(model, tok, [item], system_prompt=None, max_option_chars=48)
    assert res.predicted == options[int(got[1] > got[0])]


def test_document_sample_and_its_bits_per_char_interval():
    texts = [f"文档{i}" + "内容" * (i % 50) for i in range(1000)]
    a, b = E.sample_texts(texts, 200, 16, seed=1), E.sample_texts(texts, 200, 16, seed=1)
    assert a == b and len(set(a)) > 100 and max(map(len, a)) == 16  # seeded, a spread of documents, long ones cut
    assert a != [t[:16] for t in texts[:200]]  # a sample, not the first N
    rng = np.random.default_rng(0)
    chars = rng.integers(20, 60, size=400)
    scores = E.TextScores(nll=chars * rng.normal(3.0, 0.3, size=400) * math.log(2), tokens=chars, chars=chars)
    lo, hi = scores.bpc_ci(samples=500)
    assert lo < scores.bpc < hi and (hi - lo) / 2 / scores.bpc < 0.02  # +-2% from 400 documents of this spread
    few = E.TextScores(nll=scores.nll[:20], tokens=chars[:20], chars=chars[:20]).bpc_ci(samples=500)
    assert few[1] - few[0] > hi - lo  # fewer documents, a wider interval


def test_bootstrap_and_rouge():
    lo, hi = E.bootstrap_ci([1, 0] * 10, samples=500)
    assert lo < 0.5 < hi and hi - lo > 0.2  # 20 coin flips: a wide interval
    lo, hi = E.bootstrap_ci([1] * 20, samples=200)
    assert lo == hi == 1.0
    assert E.rouge_l("为了保护权益", "为了保护合法权益") == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert E.rouge_l("the cat sat", "the cat sat") == 1.0 and E.rouge_l("", "x") == 0.0


def test_summary_flags_a_model_that_gives_one_answer_to_everything():
    """Majority-label accuracy is not knowledge: the per-task summary says which answer dominates, and how much."""
    gold = ["经济法", "经济法", "行政法", "刑法"]
    parrot = [E.ItemResult("law_department", "mc", float(g == "经济法"), None, "经济法", g) for g in gold]
    reader = [E.ItemResult("law_department", "mc", 1.0, None, g, g) for g in gold]
    s = E.summarize(parrot, samples=100, confidence=0.95, seed=1)["tasks"]["law_department"]
    assert s["accuracy"] == 0.5 and s["top_answer"] == "经济法" and s["top_answer_share"] == 1.0
    assert s["balanced_accuracy"] == pytest.approx(1 / 3, abs=1e-4)  # right on one of the three true labels
    lo, hi = s["balanced_accuracy_ci"]
    assert lo <= s["balanced_accuracy"] <= hi
    s = E.summarize(reader, samples=100, confidence=0.95, seed=1)["tasks"]["law_department"]
    assert s["accuracy"] == 1.0 and s["top_answer_share"] == 0.5 and s["balanced_accuracy"] == 1.0
    assert s["balanced_accuracy_ci"] == [1.0, 1.0]
