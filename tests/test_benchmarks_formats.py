"""The user's benchmark files in the layouts domain benchmarks ship in, detected per file and per record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vertical_dag.modeling.evaluate import rouge_l
from vertical_dag.modeling.task_files import answer_letters, eval_file_texts, read_task_file, split_options


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return path


def test_ceval_style_option_fields(tmp_path):
    f = read_task_file(write_jsonl(tmp_path / "ceval_val.jsonl", [
        {"id": 0, "question": "下列属于民事法律行为的是____", "A": "订立遗嘱", "B": "拾得遗失物", "C": "创作小说", "D": "侵权",
         "answer": "A", "explanation": ""},
        {"id": 1, "question": "Which court hears appeals?", "A": "Trial", "B": "Appellate", "answer": "B"},
        {"id": 2, "question": "q", "A": "x", "B": "y", "answer": "E"},  # no option E
    ]))
    assert f.container == "jsonl" and f.layouts == {"option_fields": 2}
    first, second = f.items
    assert first.prompt == "下列属于民事法律行为的是____" and first.options == ["订立遗嘱", "拾得遗失物", "创作小说", "侵权"]
    assert first.answer_index == 0 and first.response == "订立遗嘱"
    assert second.options == ["Trial", "Appellate"] and second.response == "Appellate"
    assert f.bad == [(3, "bad_record: answer 'E' is not an index, a choice or a letter among 2 options")]


def test_mmlu_style_choice_list_with_an_index(tmp_path):
    f = read_task_file(write_jsonl(tmp_path / "mmlu.jsonl", [
        {"question": "Consideration in contract law means", "choices": ["a bargained-for exchange", "a gift", "a tort"],
         "answer": 0, "subject": "law"}]))
    (it,) = f.items
    assert f.layouts == {"choice_list": 1} and it.response == "a bargained-for exchange" and it.answer_index == 0


@pytest.mark.parametrize("question,stem,options", [
    ("盗窃罪属于哪一类犯罪？A:侵犯财产罪;B:危害公共安全罪;C:渎职罪", "盗窃罪属于哪一类犯罪？", ["侵犯财产罪", "危害公共安全罪", "渎职罪"]),
    ("Which is a remedy? A. damages B. a plea C. an indictment", "Which is a remedy?", ["damages", "a plea", "an indictment"]),
    ("下列说法正确的是（ ）\nA、甲公司承担责任\nB、乙公司承担责任\nC、双方均不承担", "下列说法正确的是（ ）",
     ["甲公司承担责任", "乙公司承担责任", "双方均不承担"]),
    ("根据A、B两公司的约定，下列正确的是？ A. 合同有效 B. 合同无效", "根据A、B两公司的约定，下列正确的是？", ["合同有效", "合同无效"]),
])
def test_options_inside_the_question_text(question, stem, options):
    assert split_options(question) == (stem, options)


def test_no_option_list_in_an_ordinary_question():
    assert split_options("什么是A类合同？") is None and split_options("Explain section A.") is None


@pytest.mark.parametrize("answer,letters", [("正确答案：B。", "B"), ("答案是 C", "C"), ("B", "B"), ("(D)", "D"),
                                            ("Answer: A", "A"), ("正确答案：AC。", "AC"), ("当事人意思表示一致。", None),
                                            (3, None)])
def test_answer_letter_inside_a_sentence(answer, letters):
    assert answer_letters(answer) == letters


def test_a_json_array_benchmark_with_choice_and_free_answer_records(tmp_path):
    """A public legal benchmark's file as shipped: one JSON array of instruction/question/answer records."""
    records = [
        {"instruction": "请回答下面的单项选择题。", "question": "抢劫罪的客体是？A:财产权利;B:人身权利和财产权利;C:公共安全",
         "answer": "正确答案：B。"},
        {"instruction": "请根据法律回答问题。", "question": "什么是不可抗力？", "answer": "不能预见、不能避免且不能克服的客观情况。"},
        "not a record",
        {"instruction": "请回答。", "question": "空的回答"},
    ]
    path = tmp_path / "legal_bench.json"
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    f = read_task_file(path, task="user_eval")
    assert f.container == "json_array" and f.layouts == {"options_in_text": 1, "free_answer": 1}
    mc, free = f.items
    assert mc.prompt == "请回答下面的单项选择题。\n抢劫罪的客体是？" and mc.response == "人身权利和财产权利"
    assert mc.options == ["财产权利", "人身权利和财产权利", "公共安全"] and mc.doc_id == "legal_bench.json:1"
    assert free.options is None and free.response.startswith("不能预见")
    assert [n for n, _ in f.bad] == [3, 4]
    assert "not an object" in f.bad[0][1] and "missing output" in f.bad[1][1]


def test_chat_records_and_unreadable_files_are_reported_not_fatal(tmp_path):
    chat = read_task_file(write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "你好"},
                      {"role": "assistant", "content": "您好！"}]}]))
    assert chat.layouts == {"chat": 1} and chat.items[0].prompt == "你好" and chat.items[0].response == "您好！"
    gbk = tmp_path / "gbk.jsonl"
    gbk.write_bytes(json.dumps({"question": "合同", "answer": "协议"}, ensure_ascii=False).encode("gbk"))
    bad = read_task_file(gbk)
    assert bad.container == "unreadable" and not bad.items and bad.bad[0][1].startswith("not_utf8")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"question": "q", "answer": "a"},', encoding="utf-8")
    assert read_task_file(broken).bad[0][1].startswith("bad_json")
    assert read_task_file(tmp_path / "missing.json").bad[0][1].startswith("unreadable")


def test_eval_file_texts_yield_what_decontamination_compares(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [
        {"question": "下列属于民事法律行为的是", "A": "订立遗嘱", "B": "拾得遗失物", "answer": "A"},
        {"instruction": "解释不可抗力", "output": "不能预见、不能避免且不能克服的客观情况。"}])
    assert list(eval_file_texts(path)) == ["下列属于民事法律行为的是", "订立遗嘱", "拾得遗失物", "解释不可抗力",
                                           "不能预见、不能避免且不能克服的客观情况。"]


def test_free_answers_are_scored_by_rouge_l_over_characters_for_cjk():
    # character tokens: 6 of the 8 reference characters in order, and nothing extra
    assert rouge_l("不能预见的情况", "不能预见客观情况") == pytest.approx(2 * (6 / 7) * (6 / 8) / (6 / 7 + 6 / 8))
    assert rouge_l("force majeure event", "a force majeure event") == pytest.approx(2 * 1 * 0.75 / 1.75)


def test_openai_evals_samples_choice_and_free_answer(tmp_path):
    f = read_task_file(write_jsonl(tmp_path / "samples.jsonl", [
        {"input": [{"role": "system", "content": "The following are multiple choice questions about tort law."},
                   {"role": "user", "content": "Is the defendant liable?\nA. Yes, he was negligent.\nB. No, there was no duty."
                                               "\nAnswer:"}], "ideal": "B"},
        {"input": [{"role": "system", "content": "Answer concisely."}, {"role": "user", "content": "The wrong dose is: "}],
         "ideal": ["Levofloxacin", "levofloxacin 750 mcg"]},
        {"input": "q", "ideal": ""}]))
    assert f.layouts == {"evals_choice": 1, "evals_free_answer": 1} and [n for n, _ in f.bad] == [3]
    mc, free = f.items
    assert mc.prompt == "The following are multiple choice questions about tort law.\nIs the defendant liable?"
    assert mc.options == ["Yes, he was negligent.", "No, there was no duty."] and mc.response == "No, there was no duty."
    assert free.prompt == "Answer concisely.\nThe wrong dose is:" and free.response == "Levofloxacin"
