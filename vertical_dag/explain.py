"""`vertical-dag explain DOC_ID`: a document's whole history, read from each stage's outputs and ledger."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pyarrow.dataset as ds

from .project import Project
from .quality import part_profile, split_profile
from .records import list_parts, read_ledger
from .stages import STAGES


def _find_in(folder, doc_id: str) -> dict | None:
    skip = {"ledger", "index", part_profile.FOLDER, split_profile.FOLDER}  # not documents: ledgers, indexes, gate profiles
    parts = [p for p in list_parts(folder) if not skip & set(p.relative_to(folder).parts)]
    if not parts:
        return None
    dataset = ds.dataset([str(p) for p in parts], format="parquet")
    if "doc_id" not in dataset.schema.names:
        return None
    hit = dataset.to_table(filter=pc.field("doc_id") == doc_id)
    return hit.slice(0, 1).to_pylist()[0] if hit.num_rows else None


def _masker(project: Project, show_pii: bool):
    """Text as explain prints it: PII masked the way normalize redacts it, unless asked for (--show-pii).
    The stages before normalize keep the raw text; a terminal or a log is no place for it."""
    if show_pii:
        return lambda text: text
    from .params import load_params
    from .text.pii import PII_TYPES, Redactor

    pii = load_params(project.params_file).normalize.pii
    redactor = Redactor(pii.extra_patterns, tuple(pii.types) if pii.enabled else PII_TYPES)
    return lambda text: redactor.redact(text).text


def explain(project: Project, doc_id: str, show_pii: bool = False) -> str:
    lines: list[str] = []
    seen = False
    mask = _masker(project, show_pii)
    for spec in STAGES.values():
        out = project.root / spec.out
        if not out.exists():
            continue
        row = _find_in(out, doc_id)
        ledger = read_ledger(out / "ledger")
        events = ledger.filter(pc.equal(ledger["doc_id"], doc_id)).to_pylist() if ledger.num_rows else []
        refs = ledger.filter(pc.equal(ledger["ref_doc_id"], doc_id)).to_pylist() if ledger.num_rows else []
        if row is None and not events and not refs:
            continue
        seen = True
        if row is not None:
            text = mask(row.get("text") or "").replace("\n", " ")
            extra = {k: v for k, v in row.items() if k not in ("text", "meta", "doc_id")}
            lines.append(f"[{spec.name}] kept: {json.dumps(extra, ensure_ascii=False, default=str)}")
            lines.append(f"    text: {text[:120]}{'...' if len(text) > 120 else ''}")
        for e in events:
            ref = f" (of {e['ref_doc_id']})" if e.get("ref_doc_id") else ""
            lines.append(f"[{spec.name}] {e['action']}: {e['reason']}{ref} {e.get('detail') or ''}".rstrip())
        for e in refs:
            lines.append(f"[{spec.name}] kept as the reference for {e['doc_id']} ({e['action']}: {e['reason']})")
    if not seen:
        return f"{doc_id}: not found in any stage output or ledger under {project.root / 'data'}"
    return f"{doc_id}:\n" + "\n".join(lines)
