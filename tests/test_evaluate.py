"""Evaluation: sane numbers on tiny models, MC scoring and perplexity checked by hand, report == metrics.json."""

from __future__ import annotations

import json
import math
import re
import time

import pytest
import torch

from vertical_dag.modeling import evaluate as E
from vertical_dag.modeling.report import fmt
from vertical_dag.records import read_json
from vertical_dag.stages.context import run_stage
from vertical_dag.stages.evaluate import gates

from .test_finetune import make_project


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("eval") / "p"
    proj = make_project(root, tokenizer_dir, evaluate={"general_corpus": "general.txt", "eval_files": ["evals/*.jsonl"]})
    (root / "general.txt").write_text("\n".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 20))
    (root / "evals").mkdir()
    (root / "evals/mine.jsonl").write_text("\n".join([
        json.dumps({"question": "刑法属于哪个部门？", "choices": ["刑法", "民法商法"], "answer": 0}, ensure_ascii=False),
        json.dumps({"instruction": "说出一个法律部门", "output": "刑法"}, ensure_ascii=False), "{bad"]), encoding="utf-8")
    run_stage("finetune", proj, gate=False)
    t0 = time.perf_counter()
    metrics = run_stage("evaluate", proj, gate=False)
    return proj, metrics, time.perf_counter() - t0


def test_three_models_side_by_side_with_sane_numbers(evaluated):
    proj, m, _ = evaluated
    assert set(m["models"]) == {"base", "pretrained", "finetuned"}
    for name, row in m["models"].items():
        # a random tiny model is about as good as uniform over the 49,152-token vocabulary
        assert 5_000 < row["domain_ppl"] < 500_000, name
        assert row["domain_bpc"] > 0 and row["general_bpc"] > 0
        # ppl and bpc describe the same total log-likelihood
        assert math.log(row["domain_ppl"]) * row["domain_tokens"] == pytest.approx(
            row["domain_bpc"] * math.log(2) * row["domain_chars"], rel=1e-3)
        lo, hi = row["task_accuracy_ci"]
        assert 0 <= lo <= row["task_accuracy"] <= hi <= 1
        assert row["task_items"] == 8 and set(row["tasks"]) <= {"article_lookup", "law_department", "in_force",
                                                                 "heading_passage", "continuation", "fill_in"}
        assert row["user_eval_items"] == 2
    assert set(m["gates"]) == {"pretrained_beats_base_domain_bpc", "general_bpc_increase_within_bound",
                               "finetuned_beats_base_task_accuracy"}
    assert all(isinstance(g["success"], bool) for g in m["gates"].values())
    assert "mine.jsonl:3 skipped" in m["note"]
    assert m["samples"][0]["prompt"].startswith("《中华人民共和国刑法》") and "finetuned" in m["samples"][0]
    assert m["documents_in"] == m["documents_out"] + m["dropped"] + m["quarantined"]
    # paired differences overall and per task, over the same items
    cmp = m["comparisons"]["finetuned - base"]
    per_model = {k: m["models"][k]["tasks"] for k in ("base", "finetuned")}
    assert set(cmp["tasks"]) == set(per_model["base"])
    for task, c in cmp["tasks"].items():
        assert c["n"] == per_model["base"][task]["n"]
        assert c["diff"] == pytest.approx(per_model["finetuned"][task]["accuracy"] - per_model["base"][task]["accuracy"], abs=1e-3)
        assert c["ci"][0] <= c["diff"] <= c["ci"][1]


def test_report_shows_the_three_models_and_matches_metrics_json(evaluated):
    proj, m, _ = evaluated
    out = proj.root / "data/reports/eval"
    saved = read_json(out / "metrics.json")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert saved["models"] == m["models"] and saved["gates"] == m["gates"]
    for name in ("base", "pretrained", "finetuned"):
        assert f"<th>{name}</th>" in page
        for key in ("domain_bpc", "domain_ppl", "general_bpc", "task_accuracy"):
            assert fmt(saved["models"][name][key]) in page, (name, key)
    headline = re.search(r"<h2>Headline</h2><table>(.*?)</table>", page).group(1)
    row = re.search(r"<td>domain bits/char</td>(.*?)</tr>", headline).group(1)
    assert re.findall(r"<td>([^<]*)</td>", row) == [fmt(saved["models"][n]["domain_bpc"]) for n in ("base", "pretrained", "finetuned")]
    assert page.count("data:image/png;base64,") >= 3 and "http://" not in page and "https://" not in page
    for gate, g in saved["gates"].items():
        shown = re.search(rf"<td>{gate}</td><td><span class='(\w+)'>", page).group(1)
        assert shown == ("pass" if g["success"] else "fail")
    acc_csv = (out / "plots/task_accuracy.csv").read_text().splitlines()
    assert acc_csv[0] == "model,task_accuracy" and acc_csv[1:] == [f"{n},{saved['models'][n]['task_accuracy']}"
                                                                   for n in ("base", "pretrained", "finetuned")]
    assert (proj.root / "data/plots/finetune_loss.csv").read_text().startswith("step,loss")


def test_unchanged_rerun_is_quick(evaluated):
    proj, m, first = evaluated
    t0 = time.perf_counter()
    again = run_stage("evaluate", proj, gate=False)
    assert again["skipped"] and again["models"] == m["models"]
    assert time.perf_counter() - t0 < max(5.0, first / 3)


def test_failing_gates_are_reported_not_hidden():
    class P:
        max_general_bpc_increase, min_domain_bpc_gain, min_task_accuracy_gain = 0.1, 0.0, 0.0

    models = {"base": {"domain_bpc": 2.0, "general_bpc": 1.0, "task_accuracy": 0.5},
              "pretrained": {"domain_bpc": 2.1, "general_bpc": 1.3},
              "finetuned": {"task_accuracy": 0.5}}
    g = gates(models, P)
    assert not g["pretrained_beats_base_domain_bpc"]["success"] and g["pretrained_beats_base_domain_bpc"]["observed"] == -0.1
    assert not g["general_bpc_increase_within_bound"]["success"] and g["general_bpc_increase_within_bound"]["observed"] == 0.3
    assert not g["finetuned_beats_base_task_accuracy"]["success"]  # a tie is not a win
    from vertical_dag.modeling.report import render_report

    page = render_report({"models": models, "gates": g}, {})
    assert page.count("FAIL") >= 3


def test_text_nll_and_option_scores_match_a_direct_computation(tokenizer_dir, tmp_path):
    from vertical_dag.modeling.load import load_model_folder
    from vertical_dag.modeling.sft import prompt_ids
    from vertical_dag.modeling.tiny import build_tiny_llama

    model, tok = load_model_folder(build_tiny_llama(tokenizer_dir, tmp_path / "m"))
    model.eval()
    text = "第一条　为了保护民事主体的合法权益。"
    s = E.score_texts(model, tok, [text], max_tokens=1000, block_size=512)
    ids = [tok.eos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
    assert s.tokens == len(ids) - 1 and s.chars == len(text)
    assert s.nll == pytest.approx(float(loss) * (len(ids) - 1), rel=1e-4)
    windows = E.score_texts(model, tok, [text], max_tokens=1000, block_size=8)
    assert windows.tokens == s.tokens  # short windows still score every token once
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
    item = TaskItem("article_lookup", "《中华人民共和国刑法》第一条规定了什么？", options[0], options=options[:2], answer_index=0)
    (res,) = E.score_items(model, tok, [item], system_prompt=None, max_option_chars=48)
    assert res.predicted == options[int(got[1] > got[0])]


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
    s = E.summarize(reader, samples=100, confidence=0.95, seed=1)["tasks"]["law_department"]
    assert s["accuracy"] == 1.0 and s["top_answer_share"] == 0.5 and s["balanced_accuracy"] == 1.0
