"""Reading-comprehension tasks mined from a pretraining document (AdaptLLM, Cheng et al. 2024).

Raw domain text teaches a model the domain's words but can cost it the ability to answer questions about
them; AdaptLLM appends to each document question/answer pairs about that same document, so the model keeps
practising comprehension while it reads the domain. The tasks here are keyed on structure, not on a
vertical's vocabulary, in Chinese and English alike:
- definition: "X是指…" / "本法所称X，是指…" / "X means …" / "X refers to …": what X means;
- title: the document's heading (its meta title fields, else a short first line): a one-line summary;
- article: "what does <heading> <number> say": the heading joined to the document's first sentence;
- fill_blank: a span of the document's longest sentence, blanked;
- nli: "does the text say …": yes for one of its sentences, no for another document's.
Every answer is the document's own text (or its meta, or yes/no checked against the text), so no labelling
is needed. Mining is deterministic: each document draws from a generator seeded by (seed, doc_id); only the
nli task's false claims depend on the (fixed) order of the documents. Callers mine from training
documents only: an evaluation document's text must never reach pretraining.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .tasks import Doc, DocFields, TaskConfig, body, cut, title

KINDS = ("definition", "title", "article", "fill_blank", "nli")
_BLANK = "____"

_SENT_ZH = re.compile(r"[^。！？；\n]+[。！？；]?")
_SENT_EN = re.compile(r"[^.!?;\n]+(?:[.!?;]|$)")
_DEF_ZH = re.compile(r"(?:所称|所谓)?[“\"]?(?P<term>[^，。；：、“”\"\s（）()]{2,16})[”\"]?，?是指(?P<def>[^。；]{4,200})")
_DEF_EN = re.compile(r"(?:[Tt]he term\s+)?[\"“']?(?P<term>[A-Za-z][\w\-]*(?: [\w\-]+){0,4}?)[\"”']?,?\s+"
                     r"(?:means|refers to|is defined as)\s+(?P<def>[^.;]{4,300})")
_CJK_SPAN = re.compile(r"[\u4e00-\u9fff]{2,}")
_WORD_EN = re.compile(r"[A-Za-z]{5,}")
_EN_STOP = {"shall", "which", "there", "their", "these", "those", "other", "under", "where", "about", "would"}


@dataclass(frozen=True)
class RCTask:
    kind: str
    question: str
    answer: str


@dataclass(frozen=True)
class RCConfig:
    max_tasks_per_doc: int = 2
    kinds: tuple[str, ...] = KINDS
    max_answer_chars: int = 120
    seed: int = 1234


def sentences(text: str, zh: bool) -> list[str]:
    """The text's sentences (clauses ending in 。！？； for Chinese), stripped, of at least 6 characters."""
    pattern = _SENT_ZH if zh else _SENT_EN
    return [s for s in (m.group().strip() for m in pattern.finditer(text)) if len(s) >= 6]


def _definition(doc: Doc, text: str, cfg: RCConfig, rng: random.Random) -> RCTask | None:
    found = list((_DEF_ZH if doc.zh else _DEF_EN).finditer(text))
    if not found:
        return None
    m = rng.choice(found)
    # "本法所称X" / "前款所称X": the term is what follows 所称, not the phrase that introduces it
    term = re.sub(r"^.*?(?:所称|所谓)", "", m.group("term").strip()) or m.group("term")
    meaning = m.group("def").strip(" ，,")
    if doc.zh:
        return RCTask("definition", f"根据上文，“{term}”是指什么？", cut(meaning, cfg.max_answer_chars))
    return RCTask("definition", f'According to the text, what does "{term}" mean?', cut(meaning, cfg.max_answer_chars))


def _heading(doc: Doc, fields: DocFields) -> tuple[str | None, str]:
    tc = TaskConfig(fields=fields)
    number = str(doc.meta.get(fields.number) or "") if fields.number else ""
    return title(doc, tc), number


def _title(doc: Doc, heading: str | None, number: str) -> RCTask | None:
    if not heading:
        return None
    answer = f"{heading}{number}" if doc.zh else f"{heading} {number}".strip()
    q = "上文出自哪里？请给出标题。" if doc.zh else "What is the title of the text above?"
    return RCTask("title", q, answer)


def _article(doc: Doc, heading: str | None, number: str, sents: list[str], cfg: RCConfig) -> RCTask | None:
    if not heading or not sents:
        return None
    if doc.zh:
        return RCTask("article", f"{heading}{number}规定了什么？", cut(sents[0], cfg.max_answer_chars))
    where = f"{number} of {heading}" if number else f"the text under the heading {heading}"
    return RCTask("article", f"What does {where} say?", cut(sents[0], cfg.max_answer_chars))


def _fill_blank(doc: Doc, sents: list[str], rng: random.Random) -> RCTask | None:
    if not sents:
        return None
    key = max(sents, key=len)  # the longest sentence carries the most content
    if doc.zh:
        runs = [m for m in _CJK_SPAN.finditer(key) if m.end() - m.start() >= 4]
        if not runs:
            return None
        run = rng.choice(runs)
        n = min(4, run.end() - run.start())
        s = rng.randrange(run.start(), run.end() - n + 1)
        e = s + n
    else:
        words = [m for m in _WORD_EN.finditer(key) if m.group().lower() not in _EN_STOP]
        if not words:
            return None
        w = rng.choice(words)
        s, e = w.start(), w.end()
    masked = key[:s] + _BLANK + key[e:]
    q = f"根据上文填空：{masked}" if doc.zh else f"Fill in the blank from the text: {masked}"
    return RCTask("fill_blank", q, key[s:e])


def _nli(doc: Doc, text: str, sents: list[str], other: str | None, cfg: RCConfig,
         rng: random.Random) -> RCTask | None:
    short = cfg.max_answer_chars
    sents = [s for s in sents if len(s) <= short]  # a claim is quoted whole: a cut one would be another claim
    foreign = [s for s in sentences(other, doc.zh) if s not in text and len(s) <= short] if other else []
    if not sents:
        return None
    positive = not foreign or rng.random() < 0.5
    claim = rng.choice(sents) if positive else rng.choice(foreign)
    if doc.zh:
        return RCTask("nli", f"上文是否说了：“{claim}”？请回答是或否。", "是" if positive else "否")
    return RCTask("nli", f'Does the text above say: "{claim}"? Answer yes or no.', "Yes" if positive else "No")


def mine(doc: Doc, cfg: RCConfig, fields: DocFields, other: Doc | None = None) -> list[RCTask]:
    """Up to cfg.max_tasks_per_doc tasks about `doc` (of the kinds it supports, a seeded choice among them);
    `other` is a different document, source of the nli task's false claims."""
    rng = random.Random(f"{cfg.seed}:{doc.doc_id}")
    tc = TaskConfig(fields=fields)
    text = body(doc, tc)
    sents = sentences(text, doc.zh)
    heading, number = _heading(doc, fields)
    makers = {
        "definition": lambda: _definition(doc, text, cfg, rng),
        "title": lambda: _title(doc, heading, number),
        "article": lambda: _article(doc, heading, number, sents, cfg),
        "fill_blank": lambda: _fill_blank(doc, sents, rng),
        "nli": lambda: _nli(doc, text, sents, other and body(other, tc), cfg, rng),
    }
    found = [t for k in cfg.kinds if (t := makers[k]()) is not None and t.answer.strip()]
    rng.shuffle(found)
    return found[: cfg.max_tasks_per_doc]


def render(tasks: Sequence[RCTask], zh: bool) -> str:
    """The text appended to a document: its Q/A pairs, after a blank line (empty when there are none)."""
    q, a = ("问：", "答：") if zh else ("Question: ", "Answer: ")
    return "".join(f"\n\n{q}{t.question}\n{a}{t.answer}" for t in tasks)


def mine_corpus(docs: Sequence[Doc], cfg: RCConfig, fields: DocFields) -> tuple[list[str], Counter]:
    """The suffix to append to each document (in order) and how many tasks of each kind were mined.

    The nli task's false claims come from the document `offset` places on, an offset drawn once from the
    seed, so every document has a foreign partner without a quadratic search.
    """
    offset = 1 + random.Random(cfg.seed).randrange(max(1, len(docs) - 1)) if len(docs) > 1 else 0
    counts: Counter = Counter()
    suffixes: list[str] = []
    for i, doc in enumerate(docs):
        other = docs[(i + offset) % len(docs)] if offset else None
        tasks = mine(doc, cfg, fields, other)
        counts.update(t.kind for t in tasks)
        suffixes.append(render(tasks, doc.zh))
    return suffixes, counts
