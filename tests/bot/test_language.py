from __future__ import annotations

import pytest

import knowledge_index.language
from bot.nlu.language import detect_language


@pytest.mark.parametrize(
    ("text", "language", "mixed"),
    [
        ("where is my parcel?", "en", False),
        ("我的快递怎么还没到", "zh", False),
        ("我的order还没到", "zh", True),  # a Chinese sentence with an English word
        ("refund 啥时候到", "zh", True),
        ("can I pay with 支付宝 here please", "en", True),
        ("LM2024051234", "en", False),  # too short to be a word: the default
        ("12345 !!!", "en", False),
        ("", "en", False),
        ("ＷＨＥＲＥ is it", "en", False),  # full-width Latin is Latin after NFKC
    ],
)
def test_detect_language(text, language, mixed):
    guess = detect_language(text)
    assert (guess.language, guess.mixed) == (language, mixed)


def test_default_language_for_textless_messages():
    assert detect_language("👍", default="zh").language == "zh"


def test_the_bot_uses_the_one_rule_of_knowledge_index():
    # handoff/ may not import bot/, so the rule lives in knowledge_index/ and the bot re-exports it.
    assert detect_language is knowledge_index.language.detect_language
