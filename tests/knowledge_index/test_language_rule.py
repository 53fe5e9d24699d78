"""Baton's one language rule, the single Chinese character class, and the built-in intents."""

from __future__ import annotations

import re

import pytest

from knowledge_index.language import LanguageGuess, detect_language
from knowledge_index.model import (
    BUILTIN_INTENTS,
    CJK_CHAR,
    CJK_RANGES,
    FALLBACK,
    NOT_A_TOPIC,
    SMALL_TALK_INTENTS,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我的order还没到", LanguageGuess("zh", True)),  # one English word among Chinese
        ("where is my 快递", LanguageGuess("en", True)),  # three English words outweigh two characters
        ("check 订单", LanguageGuess("zh", True)),  # a tie is Chinese
        ("ありがとう", LanguageGuess("en", False)),  # kana alone: no Chinese character, the default
        ("注文はどこですか", LanguageGuess("zh", False)),  # only the kanji count
        ("好的！？，。", LanguageGuess("zh", False)),  # full-width punctuation is no character
        ("！？，。", LanguageGuess("en", False)),
        ("ＯＲＤＥＲ 123", LanguageGuess("en", False)),  # full-width Latin is Latin after NFKC
        ("\uf900\uf901", LanguageGuess("zh", False)),  # compatibility ideographs
        ("LM2024051234", LanguageGuess("en", False)),  # "LM" is too short to be a word
    ],
)
def test_language_rule(text, expected):
    assert detect_language(text) == expected


def test_text_without_words_gets_the_default():
    assert detect_language("👍 123", default="zh") == LanguageGuess("zh", False)


@pytest.mark.parametrize("char", ["\u3400", "\u4dbf", "\u4e00", "中", "\u9fff", "\uf900", "\ufaff"])
def test_the_character_class_covers_each_range(char):
    assert CJK_CHAR.fullmatch(char)
    assert re.fullmatch(f"[{CJK_RANGES}]+", char * 3)


@pytest.mark.parametrize("char", ["あ", "ア", "한", "，", "。", "！", "\u4dc0", "a"])
def test_the_character_class_leaves_out_other_scripts_and_punctuation(char):
    assert CJK_CHAR.search(char) is None


def test_the_builtins_are_designs_and_small_talk_is_the_conversational_part():
    # DESIGN.md: "Intents with a built-in meaning: human_handoff, out_of_scope, greet, goodbye, ..."
    assert BUILTIN_INTENTS == (
        "human_handoff",
        "out_of_scope",
        "greet",
        "goodbye",
        "thanks",
        "affirm",
        "deny",
    )
    assert set(SMALL_TALK_INTENTS) == set(BUILTIN_INTENTS) - {"human_handoff", "out_of_scope"}
    assert NOT_A_TOPIC - set(BUILTIN_INTENTS) == {FALLBACK} and set(BUILTIN_INTENTS) <= NOT_A_TOPIC
