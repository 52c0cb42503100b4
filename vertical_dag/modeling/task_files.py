"""The user's own instruction and benchmark files, in the layouts domain benchmarks ship in.

A file is a JSON array of records or JSON Lines (decided per file by its first character). Each record is
read by the first layout that fits it:

- chat: {messages: [{role, content}, ...]} (the last turn is the assistant's answer);
- OpenAI-evals samples: {input: [{role, content}, ...] or a string, ideal: the answer (or a list of them)},
  multiple choice when the input lists options and the ideal answer is a letter;
- options as fields (C-Eval / CMMLU / MMLU exports): {question, A, B, C, D, ..., answer: "B"};
- a choice list: {question, choices: [...], answer: index | letter | the choice itself};
- options inside the question text ("A:...;B:..." or "A. ... B. ...") with the answer a letter, alone or
  inside a sentence ("正确答案：B。");
- free answers: {instruction?, question / input?, answer / output / response} (ROUGE-L, exact match).

A record that fits no layout is a bad record with a reason; it is counted and reported, never fatal.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tasks import TaskItem

LETTERS = "ABCDEFGH"
# an option marker: a capital letter, then ':', '.', '、' or ')', at the start or after a separator
_MARKER = re.compile(r"(?:^|(?<=[\s;；,，。?？!！(（\]】]))[(（]?([A-H])\s*[:：.．、)）]\s*")
# the answer letter(s) of a sentence: "正确答案：B。", "答案是 B", "B", "(B)", "Answer: B"
_ANSWER = re.compile(r"(?:答案|answer)[^A-Za-z]{0,6}([A-H]{1,8})(?![A-Za-z])|^\W*([A-H]{1,8})\W*$", re.IGNORECASE)
# the answer cue after the last option ("...D. xx\nAnswer:"), not part of the option
_TRAILER = re.compile(r"\s*\n\s*(?:answer|答案)\s*[:：]?\s*$", re.IGNORECASE)
_ANSWER_KEYS = ("output", "response", "answer")


class BadRecord(ValueError):
    pass


@dataclass
class TaskFile:
    """One file as read: its items, its bad records (record number, reason) and the layouts found."""

    path: Path
    container: str  # "jsonl" | "json_array" | "unreadable"
    items: list[TaskItem] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)
    layouts: Counter = field(default_factory=Counter)


def _messages(obj: dict[str, Any], task: str) -> TaskItem:
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise BadRecord("messages must be a non-empty list")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise BadRecord(f"messages[{i}] needs role system/user/assistant and string content")
    roles = [m["role"] for m in msgs if m["role"] != "system"]
    if not roles or roles[0] != "user" or roles[-1] != "assistant":
        raise BadRecord("messages must start with a user turn and end with an assistant turn")
    if not msgs[-1]["content"].strip():
        raise BadRecord("the last assistant turn is empty")
    last_user = next(m["content"] for m in reversed(msgs) if m["role"] == "user")
    clean = [{"role": m["role"], "content": m["content"]} for m in msgs]
    return TaskItem(task, last_user, msgs[-1]["content"], messages=clean)


def answer_letters(answer: Any) -> str | None:
    """The option letter(s) an answer names ("正确答案：B。" -> "B"), or None."""
    if not isinstance(answer, str):
        return None
    m = _ANSWER.search(answer.strip())
    return (m.group(1) or m.group(2)).upper() if m else None


def split_options(text: str) -> tuple[str, list[str]] | None:
    """A question with its options inside ("...？A:甲;B:乙;C:丙") -> (stem, [甲, 乙, 丙]), or None.

    The markers must run A, B, C, ... in order, at least two of them.
    """
    marks: list[re.Match[str]] = []
    for m in _MARKER.finditer(text):
        if m.group(1) == LETTERS[len(marks)]:
            marks.append(m)
        elif m.group(1) == "A" and len(marks) < 2:  # an "A." that was no option list: start again
            marks = [m]
    if len(marks) < 2:
        return None
    stem = text[: marks[0].start()].strip()
    ends = [m.start() for m in marks[1:]] + [len(text)]
    options = [text[m.end():e].strip().rstrip(";；,，").strip() for m, e in zip(marks, ends, strict=True)]
    options[-1] = _TRAILER.sub("", options[-1]).strip()
    if not stem or not all(options):
        return None
    return stem, options


def _choice(prompt: str, options: list[str], answer: Any, task: str) -> TaskItem:
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(options):
        idx = answer
    elif isinstance(answer, str) and answer in options:
        idx = options.index(answer)
    else:
        letters = answer_letters(answer)
        if letters and len(letters) > 1:
            raise BadRecord(f"answer {answer!r} names several options ({letters}): multiple-answer items are not scored")
        if not letters or LETTERS.index(letters) >= len(options):
            raise BadRecord(f"answer {str(answer)[:40]!r} is not an index, a choice or a letter among {len(options)} options")
        idx = LETTERS.index(letters)
    return TaskItem(task, prompt, options[idx], options=list(options), answer_index=idx)


def _prompt(obj: dict[str, Any]) -> str:
    parts = [obj[k] for k in ("instruction", "prompt", "question", "input") if k in obj]
    if not parts or not all(isinstance(p, str) for p in parts):
        raise BadRecord("missing instruction (or prompt / question) string")
    text = "\n".join(p.strip() for p in parts if p.strip())
    if not text:
        raise BadRecord("missing instruction (or prompt / question) string")
    return text


def _evals_sample(obj: dict[str, Any], task: str) -> tuple[TaskItem, str]:
    """An OpenAI-evals sample: the input turns joined into one prompt, `ideal` the reference."""
    turns = obj["input"] if isinstance(obj["input"], list) else [{"role": "user", "content": obj["input"]}]
    if not turns or not all(isinstance(t, dict) and isinstance(t.get("content"), str) for t in turns):
        raise BadRecord("input must be a string or a list of {role, content} turns")
    ideal = obj["ideal"][0] if isinstance(obj["ideal"], list) and obj["ideal"] else obj["ideal"]
    if not isinstance(ideal, str) or not ideal.strip():
        raise BadRecord("ideal must be a non-empty string (or a list of them)")
    prompt = "\n".join(t["content"].strip() for t in turns if t["content"].strip())
    inside = split_options(prompt) if answer_letters(ideal) else None
    if inside:
        return _choice(*inside, ideal, task), "evals_choice"
    return TaskItem(task, prompt, ideal), "evals_free_answer"


def parse_record(obj: Any, *, task: str = "user") -> tuple[TaskItem, str]:
    """One record -> (item, layout name); BadRecord says why when no layout fits."""
    if not isinstance(obj, dict):
        raise BadRecord(f"record is a JSON {type(obj).__name__}, not an object")
    if "messages" in obj:
        return _messages(obj, task), "chat"
    if "input" in obj and "ideal" in obj:
        return _evals_sample(obj, task)
    prompt = _prompt(obj)
    answer = next((obj[k] for k in _ANSWER_KEYS if k in obj), None)
    if "A" in obj and "B" in obj:
        options = [obj[c] for c in LETTERS if c in obj]
        if not all(isinstance(o, str | int | float) for o in options):
            raise BadRecord("option fields A, B, ... must be strings")
        return _choice(prompt, [str(o) for o in options], answer, task), "option_fields"
    if "choices" in obj:
        choices = obj["choices"]
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise BadRecord("choices must be a list of at least two strings")
        return _choice(prompt, choices, answer, task), "choice_list"
    inside = split_options(prompt) if answer_letters(answer) else None
    if inside:
        return _choice(*inside, answer, task), "options_in_text"
    if not isinstance(answer, str) or not answer.strip():
        raise BadRecord("missing output (or response / answer) string")
    return TaskItem(task, prompt, answer), "free_answer"


def _records(path: Path) -> tuple[str, Iterator[tuple[int, Any, str]]]:
    """(container, iterator of (record number, parsed JSON or None, error)). Raises OSError / UnicodeDecodeError."""
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return "json_array", iter([(exc.lineno, None, f"bad_json: {exc.msg} at line {exc.lineno} column {exc.colno}")])
        return "json_array", ((i, obj, "") for i, obj in enumerate(data, 1))

    def lines() -> Iterator[tuple[int, Any, str]]:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line), ""
            except json.JSONDecodeError as exc:
                yield n, None, f"bad_json: {exc.msg} at column {exc.colno}"

    return "jsonl", lines()


def read_task_file(path: Path, *, task: str = "user") -> TaskFile:
    """Every item of one file, and every bad record with its number (line, or position in a JSON array)."""
    try:
        container, records = _records(path)
    except OSError as exc:
        return TaskFile(path, "unreadable", bad=[(0, f"unreadable: {exc}")])
    except UnicodeDecodeError as exc:
        return TaskFile(path, "unreadable", bad=[(0, f"not_utf8: {exc.reason} at byte {exc.start}")])
    out = TaskFile(path, container)
    for n, obj, error in records:
        if error:
            out.bad.append((n, error))
            continue
        try:
            item, layout = parse_record(obj, task=task)
        except BadRecord as exc:
            out.bad.append((n, f"bad_record: {exc}"))
            continue
        item.doc_id, item.split = f"{path.name}:{n}", "user"
        out.items.append(item)
        out.layouts[layout] += 1
    return out


def eval_file_texts(path: Path) -> Iterator[str]:
    """The texts of an evaluation file that training data must not contain: each item's prompt, options and
    reference answer (what decontamination compares training documents against)."""
    for it in read_task_file(Path(path), task="eval").items:
        for turn in it.messages or ():
            yield turn["content"]
        if not it.messages:
            yield it.prompt
        yield from (it.options or [it.response])
