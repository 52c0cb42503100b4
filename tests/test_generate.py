"""`vertical-dag generate`: answers from a tiny model, template stripped, clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vertical_dag.cli import main as cli_main
from vertical_dag.modeling.generate import GenerationSettings, generate_one, load_for_inference, postprocess

from .test_finetune import make_project


@pytest.fixture(scope="module")
def proj(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("gen") / "p"
    p = make_project(root, tokenizer_dir, models=("finetuned",))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["finetune"]["generation"] = {"max_new_tokens": 6, "max_prompt_tokens": 64}
    (root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    return p


def test_generate_one_prompt_prints_only_the_answer(proj, capsys):
    rc = cli_main(["-C", str(proj.root), "generate", "《刑法》第一条规定了什么？"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "<|im_start|>" not in out and "<|im_end|>" not in out and "你是法律助手" not in out
    model, tok = load_for_inference(proj.root / "data/models/finetuned/model")
    res = generate_one(model, tok, "《刑法》第一条规定了什么？", GenerationSettings(max_new_tokens=6, system_prompt="你是法律助手。",
                                                                      repetition_penalty=1.1))
    assert 0 < res["new_tokens"] <= 6 and res["prompt_tokens"] > 10
    assert out.strip() == res["output"]  # the CLI used the same template, system prompt and greedy settings


def test_generate_jsonl_with_bad_lines_answers_the_good_ones(proj, capsys, tmp_path):
    src = tmp_path / "prompts.jsonl"
    src.write_text("\n".join([json.dumps({"prompt": "你好"}, ensure_ascii=False), "{broken", json.dumps({"text": 1}),
                              json.dumps({"instruction": "翻译", "input": "law"}, ensure_ascii=False),
                              json.dumps({"prompt": "长" * 200}, ensure_ascii=False)]) + "\n", encoding="utf-8")
    dest = tmp_path / "answers.jsonl"
    rc = cli_main(["-C", str(proj.root), "generate", "--input", str(src), "--output", str(dest)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{src}:2: not valid JSON" in err and f"{src}:3: needs a non-empty string field 'prompt'" in err
    assert f"{src}:5:" in err and "limit is" in err  # the over-long one is named, not silently cut
    rows = [json.loads(x) for x in dest.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rows] == [1, 4] and rows[1]["prompt"] == "翻译\nlaw"
    assert all(isinstance(r["output"], str) and r["finish_reason"] in ("length", "end_of_turn", "stop_string") for r in rows)


def test_generate_errors_missing_model_long_prompt_and_usage(proj, capsys, tmp_path):
    assert cli_main(["-C", str(proj.root), "generate", "hi", "--model", "pretrained"]) == 2
    assert "no model at" in capsys.readouterr().err
    assert cli_main(["-C", str(proj.root), "generate", "长" * 200]) == 2
    assert "limit is 64" in capsys.readouterr().err
    assert cli_main(["-C", str(proj.root), "generate"]) == 2
    assert "give either a prompt or --input" in capsys.readouterr().err
    assert cli_main(["-C", str(proj.root), "generate", "--input", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_postprocess_strips_end_of_turn_and_stop_strings(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert postprocess("答案。<|im_end|>\n<|im_start|>user", tok, []) == ("答案。", "end_of_turn")
    assert postprocess(" first line\nsecond", tok, ["\n"]) == ("first line", "stop_string")
    assert postprocess("no end", tok, []) == ("no end", "length")
    assert postprocess("截断\ufffd", tok, []) == ("截断", "length")  # a character cut by max_new_tokens


def test_generate_from_a_model_folder_path(proj, capsys):
    assert cli_main(["-C", str(proj.root), "generate", "hi"]) == 0
    by_name = capsys.readouterr().out
    folder = Path(proj.root / "data/models/finetuned/model")
    assert cli_main(["-C", str(proj.root), "generate", "hi", "--model", str(folder)]) == 0
    assert capsys.readouterr().out == by_name


def test_generate_processes_prompts_like_the_corpus_and_redacts_pii(proj, tmp_path, capsys):
    params = yaml.safe_load((proj.root / "params.yaml").read_text())
    params["finetune"]["generation"]["redact_pii"] = True
    (proj.root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    try:
        src, dest = tmp_path / "p.jsonl", tmp_path / "a.jsonl"
        id_no = "11010519491231002X"
        src.write_text(json.dumps({"prompt": f"<b>身份证</b>{id_no}　　是谁的？"}, ensure_ascii=False) + "\n", encoding="utf-8")
        assert cli_main(["-C", str(proj.root), "generate", "--input", str(src), "--output", str(dest)]) == 0
        row = json.loads(dest.read_text(encoding="utf-8"))
        assert row["prompt"] == "身份证<ID_CARD>　是谁的？" and row["redactions"] == {"ID_CARD": 1}
        assert id_no not in dest.read_text(encoding="utf-8") + capsys.readouterr().err
    finally:
        params["finetune"]["generation"]["redact_pii"] = False
        (proj.root / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
