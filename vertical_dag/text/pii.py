"""PII redaction for Chinese and Western text: patterns find candidates, validators decide.

A candidate is replaced by a typed placeholder (`<EMAIL>`, `<PHONE>`, `<ID_CARD>`, `<BANK_CARD>`, `<IP>`, or
`<NAME>` for a user pattern NAME) only when it validates:
- ID_CARD: 18-character PRC resident ID: a real province code, a real birth date, and the GB 11643-1999
  ISO 7064 MOD 11-2 check character. A statute or document number with 18 digits fails these.
- BANK_CARD: 13-19 digits (optionally grouped by spaces or dashes) with a known issuer prefix for its length
  and a valid Luhn checksum. 18-digit numbers are never cards (no scheme issues them).
- PHONE: mainland mobiles (1[3-9] + 9 digits, optional +86), landlines with an area code written apart
  ((010) 1234-5678, 0755-12345678), international numbers with a leading '+', North-American numbers with
  separators. Dates (2021-08-20, 2021年8月20日) and version numbers do not have these shapes.
- IP: IPv4 with each octet <= 255, not preceded by a version marker (v, version, 版本); IPv6 validated by the
  standard library.
Digit boundaries use look-arounds rather than \\b because CJK characters count as word characters.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc

PII_TYPES = ("EMAIL", "ID_CARD", "BANK_CARD", "IP", "PHONE")

_ND = r"(?<![0-9A-Za-z])"  # not glued to a preceding digit/letter
_NA = r"(?![0-9A-Za-z])"

EMAIL_RE = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])")
ID_CARD_RE = re.compile(_ND + r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx]" + _NA)
BANK_CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
IPV4_RE = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\.?\d)")
IPV6_RE = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")
PHONE_RES = [
    # mainland mobile, optional +86 / 0086, optional 3-4-4 grouping
    re.compile(r"(?<![\d+])(?:(?:\+|00)86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)"),
    # mainland landline: area code in brackets or followed by a dash/space, 7-8 digit number, optional extension
    re.compile(r"(?<!\d)(?:[(（]0\d{2,3}[)）][ -]?|0\d{2,3}[ -])[2-9]\d{2,3}[ -]?\d{4}(?:[ -]?(?:转|ext\.?|x)\s?\d{1,5})?(?!\d)"),
    # international with a leading '+': country code then 6-14 more digits in groups
    re.compile(r"(?<![A-Za-z0-9+])\+[1-9]\d{0,2}(?:[ -]?\(?\d{1,4}\)?){1,5}[ -]?\d{2,4}(?!\d)"),
    # North America: (555) 123-4567, 555-123-4567, 555.123.4567
    re.compile(r"(?<![\d.-])(?:\(\d{3}\)\s?|\d{3}[-.])\d{3}[-.]\d{4}(?!\d|[.-]\d)"),
]
_VERSION_BEFORE = re.compile(r"(?:[vV]|version|Version|VERSION|版本|版本号|ver\.?)\s*[:：]?\s*$")

# GB 2260 province-level codes (first two digits of a resident ID)
_PROVINCES = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
              53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83, 91}
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def id_check_char(first17: str) -> str:
    """GB 11643-1999 check character of the first 17 digits."""
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def valid_resident_id(s: str) -> bool:
    if len(s) != 18 or not s[:17].isdigit() or int(s[:2]) not in _PROVINCES:
        return False
    try:
        born = date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        return False
    if not (date(1900, 1, 1) <= born <= date.today()):
        return False
    return id_check_char(s[:17]) == s[17].upper()


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _issuer_ok(d: str) -> bool:
    n = len(d)
    if d[0] == "4":
        return n in (13, 16, 19)  # Visa
    if d[:2] == "62":
        return n in (16, 17, 19)  # UnionPay
    if d[:2] in ("34", "37"):
        return n == 15  # Amex
    if 51 <= int(d[:2]) <= 55 or 2221 <= int(d[:4]) <= 2720:
        return n == 16  # Mastercard
    if d[:2] == "35":
        return n in (16, 19)  # JCB
    if d[:4] == "6011" or d[:2] == "65":
        return n in (16, 19)  # Discover
    if d[:2] in ("50", "56", "57", "58", "60", "63", "67", "68", "69"):
        return n in (16, 19)  # Maestro and domestic debit schemes
    return False


def valid_bank_card(s: str) -> bool:
    digits = s.replace(" ", "").replace("-", "")
    # grouped numbers must be grouped regularly (4-4-4-4, 4-6-5, 6-13 ...), not a run of short numbers
    if any(len(g) < 3 for g in re.split(r"[ -]", s)):
        return False
    return 13 <= len(digits) <= 19 and _issuer_ok(digits) and luhn_ok(digits)


def _valid_ipv4(m: re.Match[str]) -> bool:
    return not _VERSION_BEFORE.search(m.string[max(0, m.start() - 12): m.start()])


def _valid_ipv6(m: re.Match[str]) -> bool:
    s = m.group()
    if s.count(":") < 2 or sum(c.isalnum() for c in s) < 3:
        return False
    if re.fullmatch(r"[\d:]+", s) and "::" not in s:  # times such as 12:30:45 are not addresses
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def _phone_digits_ok(m: re.Match[str]) -> bool:
    n = sum(c.isdigit() for c in m.group())
    return 7 <= n <= 15


@dataclass(frozen=True)
class Detector:
    name: str
    pattern: re.Pattern[str]
    validate: Callable[[re.Match[str]], bool] | None = None


def default_detectors() -> list[Detector]:
    return [
        Detector("EMAIL", EMAIL_RE),
        Detector("ID_CARD", ID_CARD_RE, lambda m: valid_resident_id(m.group())),
        Detector("BANK_CARD", BANK_CARD_RE, lambda m: valid_bank_card(m.group())),
        Detector("IP", IPV4_RE, _valid_ipv4),
        Detector("IP", IPV6_RE, _valid_ipv6),
        *(Detector("PHONE", p, _phone_digits_ok) for p in PHONE_RES),
    ]


@dataclass
class Redaction:
    text: str
    counts: dict[str, int] = field(default_factory=dict)
    chars: int = 0  # characters of the original text that were replaced

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# Quick pre-check: text without '@', ':' or a run of 5 digits cannot hold any built-in PII type. The RE2 form
# checks a whole batch in C++ (\p{Nd} is what Python's \d matches).
_MAYBE_PII = re.compile(r"@|\d(?:[ .()（）+-]?\d){4}|[0-9A-Fa-f]:")
_MAYBE_PII_RE2 = r"@|\p{Nd}(?:[ .()（）+-]?\p{Nd}){4}|[0-9A-Fa-f]:"


class Redactor:
    """Apply detectors in order; each pass sees the placeholders of the earlier ones (which hold no digits),
    so a number inside an e-mail address is not also counted as a phone."""

    def __init__(self, extra_patterns: Mapping[str, str] | None = None, types: tuple[str, ...] = PII_TYPES):
        user = [Detector(name.upper(), re.compile(p)) for name, p in (extra_patterns or {}).items()]
        self.detectors = user + [d for d in default_detectors() if d.name in types]
        self.has_user = bool(user)

    def redact_batch(self, texts: list[str], arrow: pa.Array | pa.ChunkedArray | None = None) -> list[Redaction]:
        """`redact` for each text; the pre-check runs once for the whole batch (see `candidates`)."""
        out = [Redaction(t) for t in texts]
        for i in self.candidates(texts, arrow):
            out[i] = self._redact(texts[i])
        return out

    def candidates(self, texts: list[str | None], arrow: pa.Array | pa.ChunkedArray | None = None) -> list[int]:
        """Indices of the texts that may hold PII: those the quick pre-check passes (all, with user patterns).
        arrow: the same texts as an Arrow array, when the caller has built one already."""
        if self.has_user or not texts:
            return list(range(len(texts)))
        arrow = pa.array(texts, type=pa.large_string()) if arrow is None else arrow
        maybe = pc.fill_null(pc.match_substring_regex(arrow, pattern=_MAYBE_PII_RE2), False)
        return pc.indices_nonzero(maybe).to_pylist()

    def found(self, texts: list[str | None], arrow: pa.Array | pa.ChunkedArray | None = None) -> dict[int, list[str]]:
        """The PII kinds `redact` would replace, by index, for the texts that hold any (a null text holds none)."""
        kinds = {i: sorted(self._redact(texts[i] or "").counts) for i in self.candidates(texts, arrow)}
        return {i: k for i, k in kinds.items() if k}

    def redact(self, text: str) -> Redaction:
        if not self.has_user and not _MAYBE_PII.search(text):
            return Redaction(text)
        return self._redact(text)

    def _redact(self, text: str) -> Redaction:
        out = Redaction(text)
        counts: Counter[str] = Counter()
        chars = 0
        for det in self.detectors:

            def repl(m: re.Match[str], det: Detector = det) -> str:
                nonlocal chars
                if det.validate is not None and not det.validate(m):
                    return m.group()
                counts[det.name] += 1
                chars += len(m.group())
                return f"<{det.name}>"

            text = det.pattern.sub(repl, text)
        out.text, out.counts, out.chars = text, dict(counts), chars
        return out


_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")


def strip_placeholders(text: str) -> str:
    return _PLACEHOLDER.sub("", text)
