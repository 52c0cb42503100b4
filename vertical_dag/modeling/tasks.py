"""Instruction tasks made from the domain corpus itself.

Every generated answer is a fact of the corpus (a passage's text, the rest of a passage, a span it repeats),
so the tasks need no hand labelling. The generic tasks here work on any text; a vertical adds its own task
generators through a plugin (vertical_dag.plugins): a generator is a function (Doc, TaskConfig) -> TaskItem
or None. An item remembers the document and split it came from: items from validation/test documents are
for evaluation only. Multiple-choice items carry `options` (the reference among distractors) and are scored
by the log-likelihood of each option; the others are free answers (exact match / ROUGE-L).

Passage items (a free answer that other documents could also give) name a distractor policy in
`meta["distractors"]` and their document's groups in `meta["group"]` / `meta["parent_group"]` (which meta
fields those are is the vertical's choice, DocFields); mc_for_eval then offers other documents' answers.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

N_DISTRACTORS = 3
USER_TASK = "user"  # the user's own instruction files (finetune.instruction_files)
_PUNCT = re.compile(r"[\s\W_]", re.UNICODE)
_BLANK = "____"

# distractor policies of passage items
OTHER_GROUP = "other_group"  # answers of documents of *other* groups, of the same parent group first
SAME_GROUP = "same_group"  # answers of documents of the same group first


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

    @property
    def is_passage(self) -> bool:
        """A passage item: its options are other documents' answers (scored by PMI on a common prefix)."""
        return bool(self.meta.get("distractors"))


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


@dataclass(frozen=True)
class DocFields:
    """Which meta fields of a vertical's documents play which part in the generic tasks."""

    title: tuple[str, ...] = ("title", "heading", "name")  # the first one present is the document's heading
    subtitle: str | None = "chapter"  # appended to the heading when present
    number: str | None = None  # a number the text starts with (e.g. "第一条"), cut from passages
    group: str | None = None  # the collection a document belongs to (a law, a guideline, a contract)
    parent_group: str | None = None  # a broader class of collections (a branch of law, a specialty)


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


@dataclass
class TaskConfig:
    """What every task generator is given besides the document."""

    max_context_chars: int = 160
    max_answer_chars: int = 160
    seed: int = 1234
    fields: DocFields = field(default_factory=DocFields)
    rng: random.Random = field(default_factory=random.Random)
    docs: list[Doc] = field(default_factory=list)  # every document the items are made from
    _labels: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def labels(self, key: str) -> list[str]:
        """The sorted distinct values of meta[key] over the documents: a label task's option set."""
        if key not in self._labels:
            self._labels[key] = sorted({str(d.meta[key]) for d in self.docs if d.meta.get(key)})
        return self._labels[key]


TaskGenerator = Callable[[Doc, TaskConfig], "TaskItem | None"]


# ---------------------------------------------------------------- helpers for task generators


def body(doc: Doc, cfg: TaskConfig) -> str:
    """The document's text without the leading number its fields name ("第一条　..." -> "...")."""
    no = str(doc.meta.get(cfg.fields.number) or "") if cfg.fields.number else ""
    text = doc.text.strip()
    if no and text.startswith(no):
        text = text[len(no):].lstrip("　 \t:：")
    return text


def cut(text: str, n: int) -> str:
    """At most n characters, ending at a sentence end when one is in the second half, else with an ellipsis."""
    if len(text) <= n:
        return text
    end = max(text.rfind(p, 0, n) for p in "。；;！？.!?")
    return text[: end + 1] if end >= n // 2 else text[:n] + "…"


def title(doc: Doc, cfg: TaskConfig) -> str | None:
    for key in cfg.fields.title:
        if doc.meta.get(key):
            t = str(doc.meta[key])
            sub = cfg.fields.subtitle
            if sub and doc.meta.get(sub):
                t += f" {doc.meta[sub]}"
            return t
    first = doc.text.strip().split("\n", 1)
    return first[0][:60] if len(first) == 2 and 0 < len(first[0]) <= 80 else None


def passage_meta(doc: Doc, cfg: TaskConfig, distractors: str) -> dict[str, Any]:
    """The meta of a passage item: its distractor policy and its document's groups (see mc_for_eval)."""
    meta: dict[str, Any] = {"distractors": distractors}
    for part, key in (("group", cfg.fields.group), ("parent_group", cfg.fields.parent_group)):
        if key and doc.meta.get(key):
            meta[part] = str(doc.meta[key])
    return meta


# ---------------------------------------------------------------- the generic tasks, one function each


def heading_passage(doc: Doc, cfg: TaskConfig) -> TaskItem | None:
    heading, text = title(doc, cfg), body(doc, cfg)
    if not heading or len(text) < 8:
        return None
    no = doc.meta.get(cfg.fields.number) or "" if cfg.fields.number else ""
    prompt = f"写出{heading}{no}的条文。" if doc.zh else f"Write the passage under the heading: {heading}"
    return TaskItem("heading_passage", prompt, cut(text, cfg.max_answer_chars), meta=passage_meta(doc, cfg, OTHER_GROUP))


def continuation(doc: Doc, cfg: TaskConfig) -> TaskItem | None:
    text = body(doc, cfg)
    if len(text) < 24:
        return None
    at = max(8, int(len(text) * 0.4))
    head, tail = text[:at][-cfg.max_context_chars:], text[at:]
    prompt = f"续写下面的文字：\n{head}" if doc.zh else f"Continue this text:\n{head}"
    return TaskItem("continuation", prompt, cut(tail, min(cfg.max_answer_chars, 80)),
                    meta=passage_meta(doc, cfg, SAME_GROUP))


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
    text = body(doc, cfg)[: cfg.max_context_chars]
    span = _cloze_span(text, doc.zh, cfg.rng)
    if span is None:
        return None
    s, e = span
    masked = text[:s] + _BLANK + text[e:]
    prompt = (f"填空：{masked}\n空格处应填什么？只回答所填的词。" if doc.zh
              else f"Fill in the blank: {masked}\nAnswer with the missing word only.")
    return TaskItem("fill_in", prompt, text[s:e])


GENERIC_TASKS: dict[str, TaskGenerator] = {f.__name__: f for f in (heading_passage, continuation, fill_in)}


# ---------------------------------------------------------------- building the item sets


def generate_tasks(docs: list[Doc], generators: Mapping[str, TaskGenerator], *, fields: DocFields | None = None,
                   max_context_chars: int = 160, max_answer_chars: int = 160,
                   seed: int = 1234) -> dict[str, list[TaskItem]]:
    """Every task item the documents support, per task name (each item knows its doc and split)."""
    cfg = TaskConfig(max_context_chars, max_answer_chars, seed, fields or DocFields(), random.Random(seed), docs)
    out: dict[str, list[TaskItem]] = {}
    for name, make in generators.items():
        items = []
        for d in docs:
            it = make(d, cfg)
            if it is not None and it.response.strip():
                it.task, it.doc_id, it.split = name, d.doc_id, d.split
                items.append(it)
        out[name] = items
    return out


def _distractors(it: TaskItem, pool: list[tuple[str, str, str]], rng: random.Random) -> list[str]:
    """N_DISTRACTORS answers from `pool` rows (group, parent group, answer), by the item's policy, never the reference.

    A held-out passage was never trained on, so telling it from other passages of its *own* group would take
    memorising text the model has not seen; what domain adaptation can teach is what each group is about.
    OTHER_GROUP items (lookup, heading) therefore offer passages of other groups, of the same parent group
    first, so the group's subject, not the parent's vocabulary, decides. A continuation is decided by its
    context: SAME_GROUP items offer the same group's passages first (coherence, not topic).
    """
    group, parent = it.meta.get("group", ""), it.meta.get("parent_group", "")
    if it.meta.get("distractors") == OTHER_GROUP and group:
        tiers = [[a for g, pg, a in pool if g != group and pg == parent and parent], [a for g, _, a in pool if g != group]]
    else:
        tiers = [[a for g, _, a in pool if g == group and group], [a for *_, a in pool]]
    picked: list[str] = []
    for tier in tiers:
        candidates = list(dict.fromkeys(a for a in tier if a != it.response and a not in picked))
        picked += rng.sample(candidates, min(N_DISTRACTORS - len(picked), len(candidates)))
        if len(picked) == N_DISTRACTORS:
            break
    return picked


def mc_for_eval(items: list[TaskItem], seed: int, pool_items: Iterable[TaskItem] = ()) -> None:
    """Give free-text passage items distractors (in place): other documents' answers to the same task, from
    `pool_items` + `items`, picked by the item's policy (_distractors)."""
    rng = random.Random(seed)
    pool: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for it in [*items, *pool_items]:
        if it.is_passage and (it.task, it.doc_id) not in seen:
            seen.add((it.task, it.doc_id))
            pool[it.task].append((it.meta.get("group", ""), it.meta.get("parent_group", ""), it.response))
    for it in items:
        if not it.is_passage or it.options is not None:
            continue
        picked = _distractors(it, pool[it.task], rng)
        if not picked:
            continue
        options = [*picked, it.response]
        rng.shuffle(options)
        it.options, it.answer_index = options, options.index(it.response)


def is_label_task(items: list[TaskItem]) -> bool:
    """All items choose among one fixed label set (e.g. the branches of law)."""
    return len(items) > 1 and all(it.options for it in items) and len({tuple(it.options or ()) for it in items}) == 1


def balanced_order(items: list[TaskItem], rng: random.Random) -> list[TaskItem]:
    """The items shuffled; for a label task, interleaved label by label, so any prefix is as balanced over the
    labels as the items allow (a model cannot score well, nor learn, by the majority label alone)."""
    items = list(items)
    rng.shuffle(items)
    if not is_label_task(items):
        return items
    by_label: dict[str, list[TaskItem]] = defaultdict(list)
    for it in items:
        by_label[it.response].append(it)
    queues = [by_label[k] for k in sorted(by_label)]
    rng.shuffle(queues)
    out: list[TaskItem] = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop())
    return out


def mix(items_by_task: dict[str, list[TaskItem]], weights: dict[str, float], total: int, seed: int) -> tuple[list[TaskItem], int]:
    """Sample up to `total` items with each task's share proportional to its weight (unused share moves on);
    a label task's items are balanced over its labels.

    Returns the mixed, shuffled items and how many available items were left out.
    """
    rng = random.Random(seed)
    avail = {t: balanced_order(v, rng) for t, v in items_by_task.items() if v and weights.get(t, 0) > 0}
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
    """A fixed, seeded sample of held-out items per task, balanced over the labels of a label task."""
    rng = random.Random(seed)
    out = []
    for task in sorted(items_by_task):
        out.extend(balanced_order(items_by_task[task], rng)[:per_task])
    mc_for_eval(out, seed, [it for group in items_by_task.values() for it in group])
    return out


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
