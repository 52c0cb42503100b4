"""Which text encoding a file is in, decided once from its first bytes, then strict decoding.

Order of evidence: a byte-order mark; then the configured encodings tried in order with strict decoding;
when more than one decodes cleanly (Big5 bytes are almost always valid GB18030, too) charset-normalizer
chooses among them; when none does, the one with a handful of bad bytes (bad lines are rejected one by one later), else
charset-normalizer alone. UTF-16/32 is considered only when NUL bytes are present (any newline or ASCII
character has one), and only UTF-16/32 explains them. NUL bytes that
no UTF-16/32 reading explains, or text that is mostly control characters, mean a binary file.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import charset_normalizer

from .base import FileRejected

SAMPLE_BYTES = 1 << 16
# Characters that do not occur in real text: C0 controls except \t \n \v \f \r, DEL, private use, U+FFFD.
_JUNK = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\ue000-\uf8ff\ufffd]")
_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]
_ASCII_COMPATIBLE = {"utf-8", "utf-8-sig", "ascii", "gb18030", "gbk", "gb2312", "big5", "big5hkscs", "cp950", "cp936",
                     "latin-1", "iso8859-1", "cp1252", "shift_jis", "euc-jp", "euc-kr", "cp949"}


def canonical(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return name


def ascii_compatible(encoding: str) -> bool:
    """True when a '\\n' byte is always a newline (so a file can be split into lines before decoding)."""
    return canonical(encoding) in {canonical(e) for e in _ASCII_COMPATIBLE}


def _strict(sample: bytes, encoding: str, final: bool) -> str | None:
    try:
        return codecs.getincrementaldecoder(encoding)(errors="strict").decode(sample, final=final)
    except (UnicodeDecodeError, LookupError):
        return None


def _errors(sample: bytes, encoding: str) -> int:
    """Undecodable bytes in `sample` (or all of it when the rest is not plausible text either)."""
    try:
        text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(sample, final=False)
    except LookupError:
        return len(sample)
    bad = text.count("\ufffd")
    return bad if _plausible(text.replace("\ufffd", "")) else len(sample)


def _plausible(text: str | None) -> bool:
    if not text:
        return text == ""
    return len(_JUNK.findall(text)) <= 0.01 * len(text)


def _candidates(encodings: tuple[str, ...] | list[str]) -> list[str]:
    """Configured encodings; a bare 'utf-16'/'utf-32' (no BOM here) is tried in both byte orders."""
    out: list[str] = []
    for enc in encodings:
        name = canonical(enc)
        if name in ("utf-16", "utf-32"):
            out += [f"{name}-le", f"{name}-be"]
        else:
            out.append(enc)
    return list(dict.fromkeys(out))


def _normalizer_pick(sample: bytes, among: list[str] | None) -> str | None:
    kwargs = {"cp_isolation": among} if among else {}
    best = charset_normalizer.from_bytes(sample, **kwargs).best()
    return best.encoding if best is not None else None


def detect(sample: bytes, encodings: tuple[str, ...] | list[str], final: bool = False) -> str:
    """The encoding of a file whose first bytes are `sample` (`final`: the sample is the whole file).

    Raises FileRejected('binary_file' | 'encoding_error') when no encoding gives plausible text.
    """
    for bom, enc in _BOMS:
        if sample.startswith(bom):
            return enc
    has_nul = b"\x00" in sample
    ok: list[str] = []
    for enc in _candidates(encodings):
        if has_nul != canonical(enc).startswith(("utf-16", "utf-32")):
            continue  # NUL bytes are only real text in UTF-16/32, and UTF-16/32 text has them (newline, ASCII)
        if _plausible(_strict(sample, enc, final)):
            if not ok and canonical(enc) in ("utf-8", "ascii"):
                return "utf-8"  # strict UTF-8 succeeding is strong evidence on its own
            ok.append(enc)
    if len(ok) == 1:
        return ok[0]
    if len(ok) > 1:
        return _normalizer_pick(sample, ok) or ok[0]
    if not has_nul:  # a few broken bytes in an otherwise clean file: keep the encoding, reject only those lines
        errors = {enc: _errors(sample, enc) for enc in _candidates(encodings) if ascii_compatible(enc)}
        if errors and min(errors.values()) <= max(4, len(sample) // 500):
            return min(errors, key=errors.__getitem__)
    guess = _normalizer_pick(sample, None)
    if guess and _plausible(_strict(sample, guess, final)):
        return guess
    printable = sum(1 for b in sample if b >= 0x20 or b in (9, 10, 13)) / max(1, len(sample))
    if has_nul or printable < 0.9:
        raise FileRejected("binary_file", f"{'NUL bytes' if has_nul else f'{printable:.0%} printable bytes'}; not text")
    raise FileRejected("encoding_error", f"not decodable as any of {', '.join(encodings)} (nor detected)")


def decode_line(data: bytes, encodings: list[str] | tuple[str, ...]) -> tuple[str, str] | None:
    """One line that is not in the file's encoding: (text, encoding) for the first other ASCII-compatible
    encoding that decodes it strictly into plausible text, or None."""
    for enc in encodings:
        if ascii_compatible(enc):
            text = _strict(data, enc, final=True)
            if text is not None and _plausible(text):
                return text, enc
    return None


def read_sample(path: Path, size: int = SAMPLE_BYTES) -> tuple[bytes, bool]:
    with open(path, "rb") as f:
        sample = f.read(size + 1)
    return sample[:size], len(sample) <= size


def detect_file(path: Path, encodings: tuple[str, ...] | list[str]) -> str:
    sample, whole = read_sample(path)
    return detect(sample, encodings, final=whole)


def decode_file(path: Path, encodings: tuple[str, ...] | list[str]) -> tuple[str, str]:
    """Whole file as text (for whole-file formats): (text, encoding). Decoding is strict past the sample too."""
    data = path.read_bytes()
    enc = detect(data[:SAMPLE_BYTES], encodings, final=len(data) <= SAMPLE_BYTES)
    try:
        return data.decode(enc), enc
    except UnicodeDecodeError as exc:
        raise FileRejected("encoding_error", f"byte {exc.start}: not valid {enc} ({exc.reason})") from None
