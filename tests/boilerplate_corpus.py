"""A boilerplate-heavy English corpus from real text that ships in packages: contract-like documents.

Clauses are the paragraphs of the licence files installed with this environment's Python packages (MIT, BSD,
Apache, PSF, MPL ... texts: real legal English). Every document is a variant of one of a few dozen contract
templates: a filled-in header (parties, date, place), the template's clauses (each kept with high
probability, some numbers and names substituted), a few standard clauses every template uses, a schedule
with amounts and one rider paragraph drawn from the whole pool, and a signature block. A few documents are
exact or near repeats. Nothing here is tuned to the pipeline's settings: the shape is what contracts look
like (many forms, many variants each, shared standard clauses).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import random
import re
from pathlib import Path

FIRST = ("Alice Bruno Carmen Dmitri Elena Farid Grace Hiro Ines Jonas Kiri Lena Marco Nadia Omar Priya Quinn Rosa "
         "Sven Tara Umar Vera Wei Ximena Yusuf Zoe").split()
LAST = ("Abbott Bianchi Chen Dubois Eriksen Fischer Garcia Haddad Ivanova Jensen Kowalski Larsen Moreau Nakamura "
        "Okafor Petrov Quintero Rossi Schmidt Tanaka Ueda Varga Weber Xu Yilmaz Zhang").split()
FIRMS = ("Holdings Partners Logistics Software Analytics Foods Energy Media Capital Labs Systems Works Trading "
         "Consulting Robotics Textiles").split()
PLACES = ("Amsterdam Boston Cairo Dublin Edinburgh Frankfurt Geneva Helsinki Istanbul Jakarta Kyoto Lisbon "
          "Madrid Nairobi Oslo Prague Quito Rome Seoul Toronto Vienna Warsaw").split()
KINDS = ("Software Licence Agreement", "Services Agreement", "Consulting Agreement", "Distribution Agreement",
         "Non-Disclosure Agreement", "Maintenance Agreement", "Supply Agreement", "Reseller Agreement",
         "Data Processing Agreement", "Hosting Agreement", "Contribution Agreement", "Evaluation Agreement")
MONTHS = ("January February March April May June July August September October November December").split()


def licence_paragraphs() -> list[str]:
    """Distinct paragraphs (25+ words, mostly letters) of every licence file of the installed distributions."""
    found: set[str] = set()
    for dist in md.distributions():
        for f in dist.files or []:
            name = f.name.upper()
            if not any(k in name for k in ("LICENSE", "LICENCE", "COPYING")) or f.suffix.lower() not in ("", ".txt", ".md", ".rst"):
                continue
            try:
                text = f.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for para in re.split(r"\n\s*\n", text or ""):
                para = " ".join(para.split())
                if len(para.split()) >= 25 and sum(c.isalpha() for c in para) > 0.7 * len(para):
                    found.add(para)
    return sorted(found)


def _party(rng: random.Random) -> str:
    return f"{rng.choice(LAST)} {rng.choice(FIRMS)} {rng.choice(('Ltd', 'Inc.', 'GmbH', 'S.A.', 'B.V.', 'LLC'))}"


def _fill(clause: str, rng: random.Random, names: dict[str, str]) -> str:
    """A clause as one contract words it: numbers changed, the licensor/licensee named."""
    clause = re.sub(r"\b\d+\b", lambda m: str(rng.randrange(1, 90)), clause)
    clause = re.sub(r"\b(Licensor|the copyright holders?|the authors?)\b", names["a"], clause, flags=re.I)
    return re.sub(r"\b(Licensee|You)\b", names["b"], clause)


def contracts(n_templates: int = 48, seed: int = 7) -> list[dict]:
    """Raw records {id, title, text} of contract variants; about 25 per template on average."""
    rng = random.Random(seed)
    pool = licence_paragraphs()
    rng.shuffle(pool)
    standard, pool = pool[:6], pool[6:]  # clauses every template carries (warranty, liability, ...)
    templates = []
    for t in range(n_templates):
        kind = KINDS[t % len(KINDS)]
        clauses = rng.sample(pool, rng.randint(4, 9))
        templates.append((f"{kind} (form {t + 1})", clauses, rng.sample(standard, rng.randint(2, 4))))
    records = []
    for t, (title, clauses, std) in enumerate(templates):
        for v in range(max(2, int(rng.expovariate(1 / 24)))):
            names = {"a": _party(rng), "b": _party(rng)}
            date = f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(1998, 2026)}"
            head = (f"{title.upper()}\n\nThis {title.split(' (')[0]} is made on {date} at {rng.choice(PLACES)} between "
                    f"{names['a']} (the \"Provider\") and {names['b']} (the \"Client\").")
            body = [f"{k + 1}. {_fill(c, rng, names)}" for k, c in enumerate(clauses) if rng.random() < 0.85]
            body += [f"{len(clauses) + k + 1}. {c}" for k, c in enumerate(std)]
            schedule = (f"Schedule A. Fees: {rng.randint(2, 900) * 100} EUR per {rng.choice(('month', 'quarter', 'year'))}, "
                        f"payable within {rng.choice((14, 30, 45, 60))} days of invoice. Term: {rng.randint(1, 60)} months. "
                        f"Rider: {_fill(rng.choice(pool), rng, names)}")
            sign = (f"Signed for the Provider by {rng.choice(FIRST)} {rng.choice(LAST)} and for the Client by "
                    f"{rng.choice(FIRST)} {rng.choice(LAST)}.")
            records.append({"id": f"t{t}-v{v}", "title": title, "text": "\n\n".join([head, *body, schedule, sign])})
    for k in range(0, len(records), 40):  # a few exact repeats and near repeats (another signatory)
        r = records[k]
        records.append({**r, "id": f"{r['id']}-copy"})
        records.append({**r, "id": f"{r['id']}-resigned", "text": r["text"].rsplit("Signed", 1)[0] + "Signed by proxy."})
    return records


def write_raw(root: Path, records: list[dict], batches: int = 2) -> list[Path]:
    """The records as JSONL batches under data/raw/contracts/ (a later batch arrives after the first)."""
    folder = root / "data" / "raw" / "contracts"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for b in range(batches):
        path = folder / f"batch-{b + 1}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records[b::batches]), encoding="utf-8")
        paths.append(path)
    return paths
