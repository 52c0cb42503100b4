"""The Chinese-law example's own tasks, made from each article's meta (law_name, article_no, status,
law_department, publish_date): what an article says, which branch of law it belongs to, whether its law is
still in force. Each is a vertical_dag task generator: (Doc, TaskConfig) -> TaskItem or None.
"""

from __future__ import annotations

from vertical_dag.modeling.tasks import (
    OTHER_GROUP,
    Doc,
    DocFields,
    TaskConfig,
    TaskItem,
    body,
    cut,
    passage_meta,
)

IN_FORCE = "现行有效"  # the status value of a law in force in the source database
IN_FORCE_LABELS = ["现行有效", "已失效"]

# Articles start with their number; a law is a group of articles and its branch of law the parent group.
FIELDS = DocFields(title=("title", "heading", "law_name", "name"), subtitle="chapter", number="article_no",
                   group="law_name", parent_group="law_department")


def article_lookup(doc: Doc, cfg: TaskConfig) -> TaskItem | None:
    law, no = doc.meta.get("law_name"), doc.meta.get("article_no")
    text = body(doc, cfg)
    if not law or not no or len(text) < 4:
        return None
    return TaskItem("article_lookup", f"《{law}》{no}规定了什么？", cut(text, cfg.max_answer_chars),
                    meta=passage_meta(doc, cfg, OTHER_GROUP))


def law_department(doc: Doc, cfg: TaskConfig) -> TaskItem | None:
    dept, departments = doc.meta.get("law_department"), cfg.labels("law_department")
    if not dept or not departments:
        return None
    choices = "、".join(departments)
    prompt = f"下面这条规定属于哪个法律部门？（{choices}）\n{cut(body(doc, cfg), cfg.max_context_chars)}"
    return TaskItem("law_department", prompt, str(dept), options=list(departments),
                    answer_index=departments.index(str(dept)))


def in_force(doc: Doc, cfg: TaskConfig) -> TaskItem | None:
    law, status = doc.meta.get("law_name"), doc.meta.get("status")
    if not law or not status:
        return None
    date = f"（{doc.meta['publish_date']}公布）" if doc.meta.get("publish_date") else ""
    excerpt = cut(body(doc, cfg), min(60, cfg.max_context_chars))
    prompt = f"《{law}》{date}{doc.meta.get('article_no') or ''}：{excerpt}\n这部法律现在是否仍然有效？（现行有效、已失效）"
    answer = 0 if status == IN_FORCE else 1
    return TaskItem("in_force", prompt, IN_FORCE_LABELS[answer], options=list(IN_FORCE_LABELS), answer_index=answer)


TASKS = {f.__name__: f for f in (article_lookup, law_department, in_force)}
