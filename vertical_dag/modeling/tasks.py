"""Instruction tasks made from the domain corpus itself, and the user's own instruction / eval files.

Every generated answer is a fact of the corpus (an article's text, its law's department or status, the
rest of a passage), so the tasks need no hand labelling. Example-specific tasks key on meta fields when a
document has them (law_name, article_no, law_department, status); generic reading tasks work on any text.
An item remembers the document and split it came from: items from validation/test documents are for
evaluation only. Multiple-choice items carry `options` (the reference answer among distractors) and are
scored by the log-likelihood of each option; the others are free answers (exact match / ROUGE-L).
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EXAMPLE_TASKS = ("article_lookup", "law_department", "in_force")
GENERIC_TASKS = ("heading_passage", "continuation", "fill_in")
ALL_TASKS = ("user", *EXAMPLE_TASKS, *GENERIC_TASKS)
IN_FORCE = "现行有效"
N_DISTRACTORS = 3
_PUNCT = re.compile(r"[\s\W_]", re.UNICODE)
_BLANK = "____"


@dataclass
class TaskItem:
    task: str
    prompt: str  # the user turn
    response: str  # the reference answer
    options: list[str] | None = None  # multiple choice: the response is options[answer_index]
    answer_index: int | None = None
    doc_id: str = ""
    split: str = ""
    messages: list[dict[str, str]] | None = None  # a whole chat (user files); prompt/response are its last turns
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, {}, "")}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TaskItem:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def chat(self) -> list[dict[str, str]]:
        return self.messages or [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.response}]


@dataclass(frozen=True)
class Doc:
    doc_id: str
    text: str
    meta: dict[str, Any]
    split: str
    lang: str = ""

    @property
    def zh(self) -> bool:
        return (self.lang or "").startswith("zh") or bool(re.search(r"[\u4e00-\u9fff]", self.text[:50]))


def docs_from_rows(rows: Iterable[dict[str, Any]]) -> list[Doc]:
    out = []
    for r in rows:
        meta = r.get("meta") or {}
        if isinstance(meta, str):
            try:
                meta = json.loads(meta) or {}
            except json.JSONDecodeError:
                meta = {}
        out.append(Doc(str(r["doc_id"]), str(r.get("text") or ""), meta if isinstance(meta, dict) else {},
                       str(r.get("split") or ""), str(r.get("lang") or "")))
    return out


def article_body(doc: Doc) -> str:
    """The article text without its leading number ("第一条　...")."""
    no = str(doc.meta.get("article_no") or "")
    text = doc.text.strip()
    if no and text.startswith(no):
        text = text[len(no):].lstrip("　 \t:：")
    return text


def _cut(text: str, n: int) -> str:
    """At most n characters, ending at a sentence end when one is in the second half, else with an ellipsis."""
    if len(text) <= n:
        return text
    end = max(text.rfind(p, 0, n) for p in "。；;！？.!?")
    return text[: end + 1] if end >= n // 2 else text[:n] + "…"


def _title(doc: Doc) -> str | None:
    for key in ("title", "heading", "law_name", "name"):
        if doc.meta.get(key):
            t = str(doc.meta[key])
            if doc.meta.get("chapter"):
                t += f" {doc.meta['chapter']}"
            return t
    first = doc.text.strip().split("\n", 1)
    return first[0][:60] if len(first) == 2 and 0 < len(first[0]) <= 80 else None


def _law(doc: Doc) -> dict[str, Any]:
    """The document's law and branch of law: mc_for_eval picks distractors by them."""
    return {k: str(doc.meta[k]) for k in ("law_name", "law_department") if doc.meta.get(k)}


# ---------------------------------------------------------------- the tasks, one function each


def article_lookup(doc: Doc, cfg: TaskConfig) -> TaskItem | None:
    law, no = doc.meta.get("law_name"), doc.meta.get("article_no")
    body = article_body(doc)
    if not law or not no or len(body) < 4:
        return None
    return TaskItem("article_lookup", f"《{law}》{no}规定了什么？", _cut(body, cfg.max_answer_chars), meta=_law(doc))


def law_department(doc: Doc, cfg: TaskConfig) -> TaskItem | None:
    dept = doc.meta.get("law_department")
    if not dept or not cfg.departments:
        return None
    choices = "、".join(cfg.departments)
    prompt = f"下面这条规定属于哪个法律部门？（{choices}）\n{_cut(article_body(doc), cfg.max_context_chars)}"
    return TaskItem("law_department", prompt, str(dept), options=list(cfg.departments),
                    answer_index=cfg.departments.index(dept) if dept in cfg.departments else None)


def in_force(doc: Doc, cfg: TaskConfig) -> TaskItem | None:
    law, status = doc.meta.get("law_name"), doc.meta.get("status")
    if not law or not status:
        return None
    date = f"（{doc.meta['publish_date']}公布）" if doc.meta.get("publish_date") else ""
    excerpt = _cut(article_body(doc), min(60, cfg.max_context_chars))
    prompt = f"《{law}》{date}{doc.meta.get('article_no') or ''}：{excerpt}\n这部法律现在是否仍然有效？（现行有效、已失效）"
    options = ["现行有效", "已失效"]
    answer = 0 if status == IN_FORCE else 1
    return TaskItem("in_force", prompt, options[answer], options=options, answer_index=answer)


def heading_passage(doc: Doc, cfg: TaskConfig) -> TaskItem | None:
    title = _title(doc)
    body = article_body(doc)
    if not title or len(body) < 8:
        return None
    no = doc.meta.get("article_no") or ""
    prompt = f"写出{title}{no}的条文。" if doc.zh else f"Write the passage under the heading: {title}"
    return TaskItem("heading_passage", prompt, _cut(body, cfg.max_answer_chars), meta=_law(doc))


def continuation(doc: Doc, cfg: TaskConfig) -> TaskItem | None:
    body = article_body(doc)
    if len(body) < 24:
        return None
    cut = max(8, int(len(body) * 0.4))
    head, tail = body[:cut][-cfg.max_context_chars:], body[cut:]
    prompt = f"续写下面的文字：\n{head}" if doc.zh else f"Continue this text:\n{head}"
    return TaskItem("continuation", prompt, _cut(tail, min(cfg.max_answer_chars, 80)), meta=_law(doc))


def _cloze_span(text: str, zh: bool, rng: random.Random) -> tuple[int, int] | None:
    """A span that occurs at least twice, so its masked occurrence can be filled in from the context."""
    if zh:
        for n in (4, 3, 2):
            seen: dict[str, int] = {}
            found = []
            for i in range(len(text) - n + 1):
                g = text[i:i + n]
                if _PUNCT.search(g):
                    continue
                if g in seen and i >= seen[g] + n:
                    found.append((i, i + n))
                seen.setdefault(g, i)
            if found:
                return rng.choice(found)
        return None
    words = [(m.start(), m.end(), m.group().lower()) for m in re.finditer(r"[A-Za-z]{4,}", text)]
    counts: dict[str, int] = defaultdict(int)
    for *_, w in words:
        counts[w] += 1
    repeated = [(s, e) for s, e, w in words if counts[w] > 1]
    return rng.choice(repeated[1:]) if len(repeated) > 1 else None


def fill_in(doc: Doc, cfg: TaskConfig) -> TaskItem | None:
    body = article_body(doc)[: cfg.max_context_chars]
    span = _cloze_span(body, doc.zh, cfg.rng)
    if span is None:
        return None
    s, e = span
    masked = body[:s] + _BLANK + body[e:]
    prompt = (f"填空：{masked}\n空格处应填什么？只回答所填的词。" if doc.zh
              else f"Fill in the blank: {masked}\nAnswer with the missing word only.")
    return TaskItem("fill_in", prompt, body[s:e])


TASK_FUNCS = {f.__name__: f for f in (article_lookup, law_department, in_force, heading_passage, continuation, fill_in)}


@dataclass
class TaskConfig:
    max_context_chars: int = 160
    max_answer_chars: int = 160
    seed: int = 1234
    departments: list[str] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)


# ---------------------------------------------------------------- building the item sets


def generate_tasks(docs: list[Doc], tasks: Iterable[str], *, max_context_chars: int = 160, max_answer_chars: int = 160,
                   seed: int = 1234) -> dict[str, list[TaskItem]]:
    """Every task item the documents support, per task name (each item knows its doc and split)."""
    rng = random.Random(seed)
    depts = sorted({str(d.meta["law_department"]) for d in docs if d.meta.get("law_department")})
    cfg = TaskConfig(max_context_chars, max_answer_chars, seed, depts, rng)
    out: dict[str, list[TaskItem]] = {}
    for name in tasks:
        if name not in TASK_FUNCS:
            continue
        items = []
        for d in docs:
            it = TASK_FUNCS[name](d, cfg)
            if it is not None and it.response.strip():
                it.doc_id, it.split = d.doc_id, d.split
                items.append(it)
        out[name] = items
    return out


# Where a passage task's distractors come from. A held-out article was never trained on, so telling it from
# other articles of the *same* law would take memorising text the model has not seen; what domain adaptation
# can teach is what each law is about. Lookup and heading items therefore offer articles of *other* laws
# (of the same branch first, so the law's subject, not the branch's vocabulary, decides). A continuation is
# decided by its context, so its distractors come from the same law first (coherence, not topic).
OTHER_GROUP_TASKS = ("article_lookup", "heading_passage")
SAME_GROUP_TASKS = ("continuation",)
PASSAGE_TASKS = (*OTHER_GROUP_TASKS, *SAME_GROUP_TASKS)


def _distractors(it: TaskItem, pool: list[tuple[str, str, str]], rng: random.Random) -> list[str]:
    """N_DISTRACTORS answers from `pool` rows (law, branch, answer), by the task's policy, never the reference."""
    law, dept = it.meta.get("law_name", ""), it.meta.get("law_department", "")
    if it.task in OTHER_GROUP_TASKS and law:
        tiers = [[a for lw, d, a in pool if lw != law and d == dept and dept], [a for lw, _, a in pool if lw != law]]
    else:
        tiers = [[a for lw, _, a in pool if lw == law and law], [a for *_, a in pool]]
    picked: list[str] = []
    for tier in tiers:
        candidates = list(dict.fromkeys(a for a in tier if a != it.response and a not in picked))
        picked += rng.sample(candidates, min(N_DISTRACTORS - len(picked), len(candidates)))
        if len(picked) == N_DISTRACTORS:
            break
    return picked


def mc_for_eval(items: list[TaskItem], seed: int, pool_items: Iterable[TaskItem] = ()) -> None:
    """Give free-text items of the passage tasks distractors (in place): other documents' answers to the
    same task, from `pool_items` + `items`, picked by the task's policy above."""
    rng = random.Random(seed)
    pool: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for it in [*items, *pool_items]:
        if it.task in PASSAGE_TASKS and (it.task, it.doc_id) not in seen:
            seen.add((it.task, it.doc_id))
            pool[it.task].append((it.meta.get("law_name", ""), it.meta.get("law_department", ""), it.response))
    for it in items:
        if it.task not in PASSAGE_TASKS or it.options is not None:
            continue
        picked = _distractors(it, pool[it.task], rng)
        if not picked:
            continue
        options = [*picked, it.response]
        rng.shuffle(options)
        it.options, it.answer_index = options, options.index(it.response)


def mix(items_by_task: dict[str, list[TaskItem]], weights: dict[str, float], total: int, seed: int) -> tuple[list[TaskItem], int]:
    """Sample up to `total` items with each task's share proportional to its weight (unused share moves on).

    Returns the mixed, shuffled items and how many available items were left out.
    """
    rng = random.Random(seed)
    avail = {t: list(v) for t, v in items_by_task.items() if v and weights.get(t, 0) > 0}
    for v in avail.values():
        rng.shuffle(v)
    take = dict.fromkeys(avail, 0)
    remaining = total
    while remaining > 0:
        open_tasks = [t for t in avail if take[t] < len(avail[t])]
        if not open_tasks:
            break
        wsum = sum(weights[t] for t in open_tasks)
        given = 0
        for t in open_tasks:
            share = max(1, int(remaining * weights[t] / wsum))
            n = min(share, len(avail[t]) - take[t], remaining - given)
            take[t] += n
            given += n
            if given >= remaining:
                break
        remaining -= given
        if given == 0:
            break
    chosen = [it for t in avail for it in avail[t][: take[t]]]
    rng.shuffle(chosen)
    left_out = sum(len(v) for v in items_by_task.values()) - len(chosen)
    return chosen, left_out


def eval_sample(items_by_task: dict[str, list[TaskItem]], per_task: int, seed: int) -> list[TaskItem]:
    """A fixed, seeded sample of held-out items per task (the eval set stays small; CIs show the noise)."""
    rng = random.Random(seed)
    out = []
    for task in sorted(items_by_task):
        group = list(items_by_task[task])
        rng.shuffle(group)
        out.extend(group[:per_task])
    mc_for_eval(out, seed, [it for group in items_by_task.values() for it in group])
    return out


# ---------------------------------------------------------------- user files


class BadRecord(ValueError):
    pass


def parse_user_record(obj: Any, *, task: str = "user") -> TaskItem:
    """One user record: {instruction, input?, output} / {prompt, response} / {messages: [...]} (+ choices/answer)."""
    if not isinstance(obj, dict):
        raise BadRecord("record is not a JSON object")
    if "messages" in obj:
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
    prompt = obj.get("instruction", obj.get("prompt", obj.get("question")))
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRecord("missing instruction (or prompt / question) string")
    extra = obj.get("input")
    if extra is not None and not isinstance(extra, str):
        raise BadRecord("input must be a string")
    if extra:
        prompt = f"{prompt}\n{extra}"
    choices = obj.get("choices")
    answer = obj.get("output", obj.get("response", obj.get("answer")))
    if choices is not None:
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise BadRecord("choices must be a list of at least two strings")
        if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
            idx = answer
        elif isinstance(answer, str) and answer in choices:
            idx = choices.index(answer)
        elif isinstance(answer, str) and len(answer) == 1 and "A" <= answer.upper() < chr(65 + len(choices)):
            idx = ord(answer.upper()) - 65
        else:
            raise BadRecord("answer must be an index into choices, one of the choices, or a letter")
        return TaskItem(task, prompt, choices[idx], options=list(choices), answer_index=idx)
    if not isinstance(answer, str) or not answer.strip():
        raise BadRecord("missing output (or response / answer) string")
    return TaskItem(task, prompt, answer)


def read_user_files(paths: Iterable[Path], *, task: str = "user") -> Iterator[tuple[Path, int, TaskItem | None, str]]:
    """Yield (file, line, item, reason) per line; item is None (and reason says why) for a malformed line."""
    for path in paths:
        try:
            fh = open(path, encoding="utf-8", errors="strict")
        except OSError as exc:
            yield path, 0, None, f"unreadable file: {exc}"
            continue
        with fh:
            try:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                        item = parse_user_record(obj, task=task)
                        item.doc_id, item.split = f"{path.name}:{n}", "user"
                        yield path, n, item, ""
                    except json.JSONDecodeError as exc:
                        yield path, n, None, f"bad_json: {exc.msg} at column {exc.colno}"
                    except BadRecord as exc:
                        yield path, n, None, f"bad_record: {exc}"
            except UnicodeDecodeError as exc:
                yield path, 0, None, f"not UTF-8: {exc.reason}"


def write_items(items: Iterable[TaskItem], path: Path) -> int:
    from ..records import atomic_path

    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_items(path: Path) -> list[TaskItem]:
    if not Path(path).exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [TaskItem.from_json(json.loads(line)) for line in f if line.strip()]
