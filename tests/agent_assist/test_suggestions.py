"""Suggested replies and knowledge search for agents: answers in the customer's language, the right
apology or acknowledgement, placeholders filled or skipped, keyword and vector search."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent_assist.suggestions import ReplySuggester, Suggestion, features
from handoff.signals import REASONS  # every code the escalation gives must have an opener
from knowledge_index.articles import chunk_article
from knowledge_index.encoders import get_encoder
from knowledge_index.index import VectorIndex
from knowledge_index.loader import load_kb
from knowledge_index.model import Variation, has_cjk
from tests.conftest import DEFAULT_KB

ORDER = "LM2024051234"


@pytest.fixture(scope="module")
def tiny(tiny_kb) -> ReplySuggester:
    return ReplySuggester(tiny_kb)


@pytest.fixture(scope="module")
def lumo() -> ReplySuggester:
    """The shipped knowledge base, keyword search only."""
    return ReplySuggester(load_kb(DEFAULT_KB))


@pytest.fixture(scope="module")
def with_vectors(tiny_kb) -> ReplySuggester:
    """The tiny knowledge base with a real e5 index (20 entries: cheap to build)."""
    encoder = get_encoder("e5-small")
    return ReplySuggester(tiny_kb, VectorIndex.build(tiny_kb, encoder), encoder)


RETURN_RANKING = [("faq/return_policy", 0.71), ("faq/refund_time", 0.12), ("faq/exchange", 0.08)]


def test_angry_customer_gets_an_apology_first_then_answers_in_chinese(lumo):
    found = lumo.suggest(
        "你们这退货也太麻烦了吧！", "zh", RETURN_RANKING, ["negative_sentiment", "too_many_turns"]
    )
    assert len(found) == 3
    assert (found[0].kind, found[0].source) == ("apology", "reason:negative_sentiment")
    assert "抱歉" in found[0].text
    assert [s.source for s in found[1:]] == ["utter_faq/return_policy", "utter_faq/refund_time"]
    assert all(s.kind == "answer" and has_cjk(s.text) for s in found[1:])
    assert found[1].score >= found[2].score


def test_explicit_request_gets_an_acknowledgement_last_in_english(lumo):
    found = lumo.suggest(
        "real person please, how do returns work", "en", RETURN_RANKING, ["explicit_request"]
    )
    assert len(found) == 3
    assert [s.kind for s in found] == ["answer", "answer", "acknowledgement"]
    assert found[-1].text.startswith("Hi, I'm here to help")
    assert found[0].source == "utter_faq/return_policy"
    assert not any(has_cjk(s.text) for s in found)
    # The order survives a caller sorting by score.
    assert sorted(found, key=lambda s: -s.score) == found


@pytest.mark.parametrize("language", ["zh", "en"])
@pytest.mark.parametrize("reason", REASONS)
def test_every_reason_has_a_finished_opener_in_both_languages(lumo, reason, language):
    found = lumo.suggest("退货" if language == "zh" else "returns", language, RETURN_RANKING, [reason])
    opener = next(s for s in found if s.source == f"reason:{reason}")
    expected_kind = "acknowledgement" if reason in ("explicit_request", "too_many_turns") else "apology"
    assert opener.kind == expected_kind
    assert (found.index(opener) == 0) == (reason in ("negative_sentiment", "sensitive_topic"))
    assert has_cjk(opener.text) == (language == "zh")
    assert "{" not in opener.text and "}" not in opener.text
    if expected_kind == "apology":
        assert ("抱歉" if language == "zh" else "sorry") in opener.text


def test_openers_differ_by_reason(lumo):
    texts = {lumo.suggest("x", "en", [], [r], count=1)[0].text for r in REASONS}
    assert len(texts) == len(REASONS)
    generic = lumo.suggest("x", "en", [], [], count=1)[0]
    assert (generic.kind, generic.source) == ("acknowledgement", "reason:none")


def test_placeholders_are_filled_from_slots(tiny):
    slots = {"order_number": ORDER, "status": "shipped with SF Express"}
    found = tiny.suggest("where is my order", "en", [("order_status", 0.9)], ["explicit_request"], slots)
    assert found[0].source == "utter_order_status"
    assert found[0].text == f"Order {ORDER}: shipped with SF Express"
    zh = tiny.suggest("我的订单到哪了", "zh", [("order_status", 0.9)], ["explicit_request"], slots)
    assert zh[0].text == f"订单 {ORDER}：shipped with SF Express"


def test_answers_with_unfillable_placeholders_are_skipped(tiny):
    ranking = [("order_status", 0.8), ("faq/refund_time", 0.1), ("greet", 0.05)]
    found = tiny.suggest("where is my order", "en", ranking, ["too_many_turns"], {"order_number": ORDER})
    # {status} is unknown, so the order-status answer is skipped; greet is never an answer:
    # the knowledge base allows one answer, and the acknowledgement still comes.
    assert [s.source for s in found] == ["utter_faq/refund_time", "reason:too_many_turns"]
    assert all("{" not in s.text for s in found)


def test_an_answer_with_a_broken_template_is_skipped(tiny_kb):
    broken = Variation("Order {order_number: {status}")  # an unclosed brace
    kb = dataclasses.replace(tiny_kb, responses={**tiny_kb.responses, "utter_order_status": [broken]})
    slots = {"order_number": ORDER, "status": "shipped"}
    found = ReplySuggester(kb).suggest("where is my order", "en", [("order_status", 0.9)], [], slots)
    assert [s.source for s in found] == ["reason:none"]


def test_builtin_intents_are_never_suggested(lumo):
    ranking = [
        ("human_handoff", 0.5),
        ("out_of_scope", 0.2),
        ("nlu_fallback", 0.1),
        ("greet", 0.05),
        ("thanks", 0.05),
        ("faq/coupons", 0.04),
        ("faq/made_up_topic", 0.03),
    ]
    found = lumo.suggest("人工", "zh", ranking, ["explicit_request"], count=5)
    assert [s.source for s in found] == ["utter_faq/coupons", "reason:explicit_request"]


def test_duplicates_are_removed_and_count_is_honoured(lumo):
    ranking = [
        ("faq/return_policy", 0.5),
        {"name": "faq/return_policy", "confidence": 0.4},  # the ParseResult.to_dict form is read too
        ("faq/refund_time", 0.3),
        ("faq/exchange", 0.2),
        ("faq/warranty", 0.1),
    ]
    found = lumo.suggest("return", "en", ranking, ["repeated_question"], count=5)
    sources = [s.source for s in found]
    assert len(found) == 5 and len(set(sources)) == 5
    assert sources[:4] == [
        "utter_faq/return_policy",
        "utter_faq/refund_time",
        "utter_faq/exchange",
        "utter_faq/warranty",
    ]
    assert found[0].score == pytest.approx(0.5)
    assert lumo.suggest("return", "en", ranking, ["repeated_question"], count=1)[0].kind == "apology"
    assert lumo.suggest("return", "en", ranking, count=0) == []


def test_an_english_default_is_not_offered_to_a_chinese_customer(kb_copy: Path):
    domain = kb_copy / "domain.yml"
    text = domain.read_text(encoding="utf-8")
    zh_variation = """  - condition:
    - type: slot
      name: language
      value: zh
    text: "满 99 元包邮。"
"""
    assert zh_variation in text
    domain.write_text(text.replace(zh_variation, ""), encoding="utf-8")
    suggester = ReplySuggester(load_kb(kb_copy))
    ranking = [("faq/shipping_cost", 0.8), ("faq/refund_time", 0.1)]
    en = suggester.suggest("shipping?", "en", ranking, ["explicit_request"])
    assert en[0].text == "Shipping is free over 99 yuan."
    zh = suggester.suggest("运费？", "zh", ranking, ["explicit_request"])
    assert [s.source for s in zh] == ["utter_faq/refund_time", "reason:explicit_request"]


def test_without_a_ranking_or_index_the_keywords_still_find_the_answer(tiny):
    found = tiny.suggest("how long does a refund take", "en", reasons=["fallback_streak"])
    assert [s.source for s in found] == ["utter_faq/refund_time", "reason:fallback_streak"]
    assert found[0].text == "Refunds arrive in 1-3 days."


def test_unknown_language_is_answered_in_english(tiny):
    found = tiny.suggest("refund?", "fr", [("faq/refund_time", 0.9)], ["explicit_request"])
    assert found[0].text == "Refunds arrive in 1-3 days."


@pytest.mark.parametrize(
    ("query", "language"),
    [("退货", "zh"), ("return", "en"), ("退货", "en"), ("return policy", "en"), ("退货政策", "zh")],
)
def test_search_finds_the_return_policy(lumo, query, language):
    found = lumo.search(query, language)
    assert found[0].source == "utter_faq/return_policy"
    assert found[0].kind == "answer"
    assert has_cjk(found[0].text) == (language == "zh")
    assert [s.score for s in found] == sorted((s.score for s in found), reverse=True)
    assert len({s.source for s in found}) == len(found)


@pytest.mark.parametrize(
    ("query", "language", "source"),
    [
        ("发票", "zh", "utter_faq/invoice"),
        ("运费", "zh", "utter_faq/shipping_cost"),
        ("refund", "en", "utter_faq/refund_time"),
        ("points expire", "en", "utter_faq/points"),
        ("refnd timeline", "en", "utter_faq/refund_time"),
    ],
)
def test_search_finds_other_answers(lumo, query, language, source):
    assert lumo.search(query, language)[0].source == source


def test_search_finds_article_passages_in_the_language(lumo):
    found = lumo.search("羊毛衫怎么洗", "zh", limit=3)
    assert len(found) == 3
    assert found[0].kind == "article" and found[0].source.startswith("article:wool-cashmere-down-care#")
    # The wool article is only in Chinese: an English search shows none of it.
    assert not any("wool-cashmere" in s.source for s in lumo.search("羊毛衫怎么洗", "en"))


def test_search_with_nothing_to_find(lumo):
    assert lumo.search("", "zh") == []
    assert lumo.search("   ", "en") == []
    assert lumo.search("the", "en") == []  # stop words carry no meaning
    assert lumo.search("天气", "zh") == []  # only out_of_scope examples say this
    assert len(lumo.search("return", "en", limit=2)) == 2


def test_article_sources_number_the_passages(tiny_kb, tiny):
    article = next(a for a in tiny_kb.articles if a.id == "caring-for-wool")
    chunks = chunk_article(article)
    found = tiny.search("wool sweater dry flat", "en", limit=10)
    by_source = {s.source: s.text for s in found if s.kind == "article"}
    assert by_source
    for source, text in by_source.items():
        number = int(source.rsplit("#", 1)[1])
        assert chunks[number - 1].text == text


def test_features_mix_chinese_ngrams_and_english_stems():
    found = features("Returned 2 jackets，退货吗")
    assert {"return", "jacket", "2", "退货", "货吗", "退"} <= set(found)
    # A Chinese run is the shared character class (Extension A included); kana ends it.
    found = features("退\u3400货の件")
    assert {"退\u3400", "\u3400货", "件"} <= set(found) and "货件" not in found
    assert features("shipping") == features("ship")
    assert "the" not in features("the")


def test_to_dict():
    assert Suggestion("Hi", "acknowledgement", "reason:none", 0.123456).to_dict() == {
        "text": "Hi",
        "kind": "acknowledgement",
        "source": "reason:none",
        "score": 0.1235,
    }


def test_vector_search_suggests_an_article_passage(with_vectors):
    found = with_vectors.suggest("how do I dry a wool jumper", "en", reasons=["too_many_turns"])
    assert len(found) == 3
    assert found[0].kind == "article" and found[0].source.startswith("article:caring-for-wool#")
    assert found[-1].source == "reason:too_many_turns"
    zh = with_vectors.suggest("智能音箱怎么连接手机", "zh", reasons=["negative_sentiment"])
    assert zh[0].kind == "apology"
    assert zh[1].kind == "article" and zh[1].source.startswith("article:speaker-pairing#")
    assert all(has_cjk(s.text) for s in zh)


def test_vector_and_nlu_merge_without_duplicates(with_vectors):
    # The NLU leans the wrong way; the message's meaning still brings the right answer in.
    found = with_vectors.suggest(
        "快递费多少钱", "zh", [("faq/refund_time", 0.5)], ["explicit_request"], count=4
    )
    sources = [s.source for s in found]
    assert len(sources) == len(set(sources)) == 4
    assert {"utter_faq/shipping_cost", "utter_faq/refund_time"} <= set(sources)
    assert all(has_cjk(s.text) for s in found)


def test_vector_search_box(with_vectors):
    assert with_vectors.search("快递费多少钱", "zh")[0].source == "utter_faq/shipping_cost"
    assert with_vectors.search("money back how many days", "en")[0].source == "utter_faq/refund_time"
    assert with_vectors.search("", "en") == []
