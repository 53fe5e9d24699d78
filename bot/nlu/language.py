"""Language detection for Chinese and English, with mixed text handled."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from knowledge_index.model import CJK_CHAR

_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


@dataclass(frozen=True)
class LanguageGuess:
    """``language`` is "zh" or "en"; ``mixed`` says both scripts carry words."""

    language: str
    mixed: bool


def detect_language(text: str, default: str = "en") -> LanguageGuess:
    """Guess the language a customer writes in.

    Chinese customers often mix in English words ("我的order还没到"), while English
    customers rarely type Chinese: a Chinese character counts as much as an English
    word, so text with as many Chinese characters as English words is Chinese.
    Text with neither (numbers, emoji) gets ``default``.
    """
    text = unicodedata.normalize("NFKC", text)  # full-width Latin letters count as Latin
    cjk = len(CJK_CHAR.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    if cjk == 0 and latin == 0:
        return LanguageGuess(default, False)
    language = "zh" if cjk >= latin else "en"
    return LanguageGuess(language, cjk > 0 and latin > 0)
