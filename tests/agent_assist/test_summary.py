"""The handoff summary: what the customer wanted, what the bot managed, the mood, why it was handed over."""

from __future__ import annotations

import re
from typing import Any

import pytest

from agent_assist.summary import MAX_CHARS, REASON_TEXT, intent_title, summarize
from handoff.signals import REASONS
from knowledge_index.loader import load_kb
from knowledge_index.model import has_cjk
from tests.conftest import DEFAULT_KB

ORDER = "LM2024051234"


def customer(text: str, intent: str, entities: list[dict[str, Any]] | None = None, label: str | None = None):
    """A customer turn as Turn.to_dict() gives it."""
    nlu: dict[str, Any] = {
        "intent": intent,
        "confidence": 0.9,
        "ranking": [{"name": intent, "confidence": 0.9}],
        "entities": entities or [],
        "language": "zh" if has_cjk(text) else "en",
    }
    if label is not None:
        nlu["sentiment"] = {"negative": 0.9 if label != "neutral" else 0.1, "anger": 0.0, "label": label}
    return {"sender": "customer", "text": text, "language": nlu["language"], "nlu": nlu}


def bot(action: str, intent: str, source: str) -> dict[str, Any]:
    """A bot turn as Turn.to_dict() gives it."""
    return {
        "sender": "bot",
        "text": "...",
        "language": "en",
        "nlu": {"action": action, "intent": intent, "source": source},
    }


def order_entity() -> list[dict[str, Any]]:
    return [{"entity": "order_number", "value": ORDER, "start": 0, "end": 12}]


def longest_shared_run(a: str, b: str) -> int:
    """The length of the longest substring ``a`` and ``b`` have in common."""
    best = 0
    previous = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        current = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def sentences(text: str, language: str) -> int:
    ends = "。" if language == "zh" else r"\.(?:\s|$)"
    return len(re.findall(ends, text))


@pytest.fixture
def returns_chat() -> list[dict[str, Any]]:
    """A chat that went wrong: a return, a refund question, two misunderstandings, an angry customer."""
    return [
        customer(f"I want to send back order {ORDER}", "faq/return_policy", order_entity(), "neutral"),
        bot("answer", "faq/return_policy", "utter_faq/return_policy"),
        customer("when do I get my money back", "faq/refund_time", label="neutral"),
        bot("answer", "faq/refund_time", "utter_faq/refund_time"),
        customer("that does not answer my question about the return", "faq/return_policy", label="negative"),
        bot("fallback", "nlu_fallback", "utter_default"),
        customer("blah this is useless", "nlu_fallback", label="negative"),
        bot("fallback", "nlu_fallback", "utter_default"),
        customer("get me a human now", "human_handoff", label="angry"),
        bot("handoff_requested", "human_handoff", "utter_human_handoff"),
        {"sender": "system", "text": "queued", "language": None, "nlu": None},
    ]


def test_english_summary_names_topics_order_bot_mood_and_reasons(returns_chat):
    text = summarize(returns_chat, ["explicit_request", "negative_sentiment"], "en")
    assert "return policy (2 times)" in text and "refund time" in text
    assert ORDER in text
    assert "could not understand 2 times" in text
    assert "angry in the last message" in text and "negative for the last 3" in text
    assert REASON_TEXT["en"]["explicit_request"] in text
    assert REASON_TEXT["en"]["negative_sentiment"] in text
    assert len(text) <= MAX_CHARS["en"] and sentences(text, "en") <= 3
    # The most asked topic comes first.
    assert text.index("return policy") < text.index("refund time")


def test_chinese_summary_uses_chinese_titles_and_reasons(returns_chat):
    text = summarize(returns_chat, ["repeated_question", "fallback_streak"], "zh")
    assert "退货政策（2 次）" in text and "退款时效" in text
    assert f"订单号 {ORDER}" in text
    assert "2 次未能理解" in text
    assert "客户最后一条消息情绪愤怒" in text
    assert REASON_TEXT["zh"]["repeated_question"] in text and REASON_TEXT["zh"]["fallback_streak"] in text
    assert "return policy" not in text
    assert len(text) <= MAX_CHARS["zh"] and sentences(text, "zh") <= 3


def test_other_languages_get_english(returns_chat):
    assert summarize(returns_chat, ["explicit_request"], "fr") == summarize(
        returns_chat, ["explicit_request"], "en"
    )


def test_titles_override_the_derived_ones(returns_chat):
    titles = {"faq/return_policy": "Rückgabe", "faq/refund_time": "Erstattung"}
    text = summarize(returns_chat, ["explicit_request"], "en", titles)
    assert "Rückgabe (2 times)" in text and "Erstattung" in text
    assert "return policy" not in text


@pytest.mark.parametrize("language", ["zh", "en"])
def test_never_more_than_40_characters_of_customer_text(language):
    long_en = "I have been waiting for three weeks and nobody tells me anything, " * 6
    long_zh = "我已经等了三个星期了，你们客服一直不回复，到底什么时候才能给我退款，" * 5
    turns = [
        customer(long_zh, "faq/refund_time", order_entity(), "negative"),
        bot("answer", "faq/refund_time", "utter_faq/refund_time"),
        customer(long_en, "faq/refund_time", [{"entity": "email", "value": "x" * 80}], "angry"),
    ]
    for last in (long_en, long_zh):
        text = summarize(
            [*turns, customer(last, "nlu_fallback", label="angry")], ["negative_sentiment"], language
        )
        for turn in turns:
            assert longest_shared_run(text, turn["text"]) <= 40
        assert longest_shared_run(text, last) <= 40
        assert len(text) <= MAX_CHARS[language]


def test_short_last_message_is_quoted(returns_chat):
    assert '"get me a human now"' in summarize(returns_chat, ["explicit_request"], "en")
    chat = [customer("转人工", "human_handoff")]
    text = summarize(chat, ["explicit_request"], "zh")
    assert "“转人工”" in text and "尚不明确" in text and "尚未解答" in text


@pytest.mark.parametrize("language", ["zh", "en"])
def test_stays_short_with_every_reason_and_many_topics(language):
    intents = [f"faq/very_long_topic_name_number_{i}_about_many_things" for i in range(8)]
    turns = []
    for i, intent in enumerate(intents):
        entities = [
            {"entity": "order_number", "value": f"LM20240512{i:02d}"},
            {"entity": "carrier", "value": "sf"},
        ]
        turns += [
            customer(f"question {i} about something", intent, entities, "negative"),
            bot("answer", intent, "x"),
        ]
    turns += [bot("ask_slot", "order_status", "utter_ask_order_number"), bot("clarify", "nlu_fallback", "x")]
    text = summarize(turns, list(REASON_TEXT["en"]), language)
    assert len(text) <= MAX_CHARS[language]
    assert sentences(text, language) <= 3
    for code in REASON_TEXT[language]:
        assert REASON_TEXT[language][code] in text


def test_what_the_bot_asked_for_and_calm_customers():
    turns = [
        customer("where is my parcel", "order_status"),
        bot("ask_slot", "order_status", "utter_ask_order_number"),
        customer("I don't know it", "nlu_fallback"),
        bot("clarify", "nlu_fallback", "utter_did_you_mean"),
    ]
    text = summarize(turns, ["too_many_turns"], "en")
    assert "order status" in text
    assert "asked for the order number" in text and "clarify 1 time" in text
    assert "angry" not in text and "negative" not in text  # no sentiment: no mood claimed
    assert "询问了订单号" in summarize(turns, ["too_many_turns"], "zh")


@pytest.mark.parametrize("language", ["zh", "en"])
def test_every_reason_code_has_words(language):
    # agent_assist may not import handoff, so its texts are keyed by the codes spelled out: check them.
    assert set(REASON_TEXT[language]) == set(REASONS)


def test_unknown_reasons_and_odd_turns_do_not_break_it():
    turns = [
        {"sender": "customer", "text": "hello?", "nlu": None},
        {"sender": "agent", "text": "an agent's words are not the customer's", "nlu": None},
        {"sender": "customer", "text": "refund", "nlu": {"intent": "faq/refund_time", "entities": None}},
    ]
    text = summarize(turns, ["vip_customer"], "en")
    assert "refund time" in text and "vip customer" in text
    assert summarize([], [], "zh").endswith("已转交人工客服。")


def test_intent_title():
    assert intent_title("faq/return_policy", "en") == "return policy"
    assert intent_title("faq/return_policy", "zh") == "退货政策"
    assert intent_title("order_status", "en") == "order status"
    assert intent_title("faq/return_policy", "zh", {"faq/return_policy": "退换货"}) == "退换货"
    assert intent_title("faq/unheard_of", "zh") == "unheard of"


def test_every_intent_of_the_shipped_knowledge_base_has_a_chinese_title():
    kb = load_kb(DEFAULT_KB)
    untitled = [i for i in kb.nlu.intents if not has_cjk(intent_title(i, "zh"))]
    assert untitled == []
