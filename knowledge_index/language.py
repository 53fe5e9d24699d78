"""Baton's one rule for the language a message is written in: Chinese or English, mixed text handled.

The bot, the channels and the escalation's sentiment scorer all ask this module, so a message gets
the same language wherever it is judged.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from knowledge_index.model import CJK_CHAR

# An English word for the rule: two letters or more, so an order number's "LM" prefix alone is not one.
LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


@dataclass(frozen=True)
class LanguageGuess:
    """The language of a message.

    Attributes:
        language: ``"zh"`` or ``"en"``.
        mixed: both scripts carry words (Chinese characters and English words).
    """

    language: str
    mixed: bool


def detect_language(text: str, default: str = "en") -> LanguageGuess:
    """Guess the language a customer writes in.

    Chinese customers often mix in English words ("我的order还没到"), while English customers
    rarely type Chinese: a Chinese character counts as much as an English word, so text with as
    many Chinese characters as English words is Chinese. Kana and Hangul are neither.

    Args:
        text: the message.
        default: the language of a text with neither (numbers, emoji, punctuation).
    """
    text = unicodedata.normalize("NFKC", text)  # full-width Latin letters count as Latin
    cjk = len(CJK_CHAR.findall(text))
    latin = len(LATIN_WORD.findall(text))
    if cjk == 0 and latin == 0:
        return LanguageGuess(default, False)
    return LanguageGuess("zh" if cjk >= latin else "en", cjk > 0 and latin > 0)
