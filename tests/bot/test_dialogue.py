"""The dialogue policy on real engines: the tiny knowledge base, the default one, demo orders in real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import pytest
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bot.dialogue import (
    ActionKind,
    BotAction,
    DialogueContext,
    DialoguePolicy,
    index_floor,
    pick_article,
)
from bot.nlu.types import IntentScore, ParseResult
from bot.orders import STATUS_LABELS, DemoOrderConnector, OrderConnector, load_seed_orders
from bot.reply import ChatSession, render
from bot.trained import TrainedBot
from conversations.redis_server import free_port
from knowledge_index.index import Entry, Hit
from knowledge_index.model import FALLBACK, Variation

PERSON_EN = {"title": "Talk to a person", "payload": "/human_handoff"}
PERSON_ZH = {"title": "转人工客服", "payload": "/human_handoff"}
SEED = {order.number: order for order in load_seed_orders()}


def converse(
    kb,
    nlu,
    index,
    messages: Sequence[str],
    *,
    orders_url: str | None = None,
    connector: OrderConnector | None = None,
    context: DialogueContext | None = None,
) -> list[BotAction]:
    """Send ``messages`` one after another through a fresh policy; every action, in order."""

    async def main() -> list[BotAction]:
        own = DemoOrderConnector.from_url(orders_url) if orders_url else None
        try:
            policy = DialoguePolicy.from_engine(kb, nlu, index, own or connector)
            current = context or DialogueContext()
            actions = []
            for text in messages:
                action = await policy.respond(text, current)
                actions.append(action)
                current = action.context
            return actions
        finally:
            if own is not None:
                await own.aclose()

    return asyncio.run(main())


@pytest.fixture
def tiny(tiny_kb, tiny_nlu, tiny_index):
    """``converse`` on the tiny knowledge base."""

    def run(*messages: str, **options) -> list[BotAction]:
        return converse(tiny_kb, tiny_nlu, tiny_index, messages, **options)

    return run


@pytest.fixture
def tiny_policy(tiny_kb, tiny_nlu, tiny_index) -> DialoguePolicy:
    return DialoguePolicy.from_engine(tiny_kb, tiny_nlu, tiny_index)


def decide(policy: DialoguePolicy, parse: ParseResult, context: DialogueContext | None = None) -> BotAction:
    return asyncio.run(policy.decide(parse, context or DialogueContext()))


def unsure(text: str, language: str, threshold: float, *ranking: tuple[str, float]) -> ParseResult:
    """A parse the engine fell back on, with the given ranking (for the rule's edge cases)."""
    scores = tuple(IntentScore(name, confidence) for name, confidence in ranking)
    return ParseResult(text, language, IntentScore(FALLBACK, threshold), scores)


# -- FAQ answers and small talk ---------------------------------------------------------------


def test_faq_answer_in_chinese_and_english(tiny):
    zh, en = tiny("退款要多久", "how long does a refund take")
    assert (zh.kind, zh.intent, zh.source, zh.language) == (
        ActionKind.ANSWER,
        "faq/refund_time",
        "utter_faq/refund_time",
        "zh",
    )
    assert zh.text == "退款 1-3 天到账。"
    assert (en.kind, en.language, en.text) == (ActionKind.ANSWER, "en", "Refunds arrive in 1-3 days.")
    assert zh.buttons == [] and en.buttons == []


@pytest.mark.slow
def test_default_kb_faq_and_small_talk_in_the_customers_language(lumo):
    kb, nlu, index = lumo
    zh, en, thanks, bye = converse(
        kb, nlu, index, ["退款多久到账", "how long do refunds take", "谢谢", "bye"]
    )
    assert zh.text == kb.response("utter_faq/refund_time", "zh").text
    assert en.text == kb.response("utter_faq/refund_time", "en").text
    assert zh.text != en.text
    assert (thanks.source, thanks.text) == ("utter_thanks", kb.response("utter_thanks", "zh").text)
    assert (bye.source, bye.language, bye.text) == (
        "utter_goodbye",
        "en",
        kb.response("utter_goodbye", "en").text,
    )


# -- order status -----------------------------------------------------------------------------


def test_order_status_with_the_number_in_the_message(tiny, seeded_orders):
    en, zh = tiny("where is my order LM2024051234", "我的订单LM2024050877到哪了", orders_url=seeded_orders)
    assert (en.kind, en.intent, en.source) == (ActionKind.ANSWER, "order_status", "utter_order_status")
    assert en.text == f"Order LM2024051234: {SEED['LM2024051234'].status_in('en')} (updated 2024-05-14 09:12)"
    assert zh.language == "zh"
    assert zh.text == f"订单 LM2024050877：{SEED['LM2024050877'].status_in('zh')}（更新于 2024-05-10 15:40）"
    assert zh.context.slots["order_number"] == "LM2024050877"  # the latest number is the one remembered


def test_order_number_asked_for_then_given(tiny, seeded_orders):
    ask, answer = tiny("我的快递到哪了", "LM2024051234", orders_url=seeded_orders)
    assert (ask.kind, ask.source, ask.text) == (
        ActionKind.ASK_SLOT,
        "utter_ask_order_number",
        "请提供订单号。",
    )
    assert (ask.context.waiting_intent, ask.context.waiting_slot) == ("order_status", "order_number")
    # A bare number says nothing about the language: the conversation's (Chinese) is kept.
    assert (answer.kind, answer.intent, answer.language) == (ActionKind.ANSWER, "order_status", "zh")
    assert SEED["LM2024051234"].status_in("zh") in answer.text
    assert answer.context.waiting_intent is None


def test_a_pending_question_survives_small_talk_and_takes_bare_digits(tiny, seeded_orders):
    ask, hello, answer = tiny("where is my parcel", "hello", "2024052019", orders_url=seeded_orders)
    assert ask.kind == ActionKind.ASK_SLOT
    assert hello.text == "Hello!" and hello.context.waiting_intent == "order_status"
    # 10 digits without the LM prefix are normalised by the connector and shown in full.
    assert answer.kind == ActionKind.ANSWER
    assert answer.text.startswith("Order LM2024052019: " + SEED["LM2024052019"].status_in("en"))


def test_another_question_replaces_the_pending_one(tiny, seeded_orders):
    ask, faq = tiny("我的快递到哪了", "运费多少钱", orders_url=seeded_orders)
    assert ask.kind == ActionKind.ASK_SLOT
    assert (faq.kind, faq.text) == (ActionKind.ANSWER, "满 99 元包邮。")
    assert faq.context.waiting_intent is None


def test_unknown_order_number_is_said_clearly_and_the_bot_waits_for_a_correct_one(tiny, seeded_orders):
    wrong, right = tiny("where is my order LM2099999999", "LM2024051234", orders_url=seeded_orders)
    assert (wrong.kind, wrong.source, wrong.language) == (ActionKind.ASK_SLOT, "order_not_found", "en")
    assert "couldn't find an order with the number LM2099999999" in wrong.text
    assert wrong.buttons == [PERSON_EN]
    assert "order_number" not in wrong.context.slots
    assert (wrong.context.waiting_intent, wrong.context.waiting_slot) == ("order_status", "order_number")
    assert right.kind == ActionKind.ANSWER and SEED["LM2024051234"].status_in("en") in right.text

    (zh,) = tiny("我的订单LM2099999999到哪了", orders_url=seeded_orders)
    assert zh.source == "order_not_found" and "没有查到订单号为 LM2099999999 的订单" in zh.text
    assert zh.buttons == [PERSON_ZH]


def _no_status_in(text: str) -> bool:
    labels = [label for texts in STATUS_LABELS.values() for label in texts.values()]
    seeded = [t for order in SEED.values() for t in order.status_text.values()]
    return not any(s in text for s in labels + seeded)


def test_without_a_connector_the_bot_says_so_and_invents_nothing(tiny):
    en, zh = tiny("where is my order LM2024051234", "我的订单LM2024051234到哪了")
    assert (en.kind, en.source, en.intent) == (
        ActionKind.FALLBACK,
        "order_lookup_unavailable",
        "order_status",
    )
    assert "can't look up orders here" in en.text and "LM2024051234" in en.text
    assert en.buttons == [PERSON_EN]
    assert zh.language == "zh" and "暂时无法查询订单" in zh.text and zh.buttons == [PERSON_ZH]
    assert _no_status_in(en.text) and _no_status_in(zh.text)
    assert en.context.waiting_intent is None


def test_an_unreachable_order_system_is_not_an_unknown_order(tiny_kb, tiny_nlu, tiny_index):
    async def main() -> BotAction:
        client = Redis(port=free_port(), retry=Retry(NoBackoff(), 0), socket_connect_timeout=2)
        async with DemoOrderConnector(client, owns_client=True) as connector:
            policy = DialoguePolicy.from_engine(tiny_kb, tiny_nlu, tiny_index, connector)
            return await policy.respond("where is my order LM2024051234", DialogueContext())

    action = asyncio.run(main())
    assert (action.kind, action.source) == (ActionKind.FALLBACK, "order_lookup_failed")
    assert "can't reach our order system" in action.text and action.buttons == [PERSON_EN]
    assert _no_status_in(action.text)


# -- did you mean -----------------------------------------------------------------------------


def test_did_you_mean_offers_two_buttons_and_a_press_answers(tiny):
    clarify, pressed = tiny("快递费退款", "/faq/shipping_cost")
    ranked = [s.name for s in clarify.parse.ranking[:2]]
    assert clarify.kind == ActionKind.CLARIFY and clarify.source == "utter_did_you_mean"
    assert set(ranked) == {"faq/refund_time", "faq/shipping_cost"}
    titles = {"faq/refund_time": "退款多久到账", "faq/shipping_cost": "运费多少"}
    assert clarify.buttons == [{"title": titles[i], "payload": f"/{i}"} for i in ranked]
    assert clarify.text == f"请问您想咨询的是“{titles[ranked[0]]}”，还是“{titles[ranked[1]]}”呢？"
    assert clarify.context.options == tuple(ranked)
    # The payload is Latin text, yet the answer stays in the conversation's language.
    assert (pressed.kind, pressed.text, pressed.language) == (ActionKind.ANSWER, "满 99 元包邮。", "zh")
    assert pressed.parse.intent == IntentScore("faq/shipping_cost", 1.0)
    assert pressed.context.options == ()


def test_the_same_question_is_not_asked_twice(tiny):
    first, second = tiny("快递费退款", "快递费退款")
    assert first.kind == ActionKind.CLARIFY
    assert second.kind in (ActionKind.FALLBACK, ActionKind.ARTICLE)
    assert second.kind == ActionKind.ARTICLE or PERSON_ZH in second.buttons


def test_did_you_mean_in_english_uses_english_titles(tiny_policy):
    threshold = tiny_policy.threshold
    parse = unsure(
        "refund or shipping", "en", threshold, ("faq/refund_time", 0.45), ("faq/shipping_cost", 0.4)
    )
    action = decide(tiny_policy, parse)
    assert action.kind == ActionKind.CLARIFY
    assert action.text == 'Did you mean "how long does a refund take" or "how much is shipping"?'
    assert [b["payload"] for b in action.buttons] == ["/faq/refund_time", "/faq/shipping_cost"]


def test_close_means_relative_to_the_scores_and_the_threshold(tiny_policy):
    t = tiny_policy.threshold  # 0.57 on the tiny knowledge base
    close = unsure("x", "en", t, ("faq/refund_time", t * 0.6), ("faq/shipping_cost", t * 0.45))
    assert tiny_policy.did_you_mean(close, DialogueContext()) == ("faq/refund_time", "faq/shipping_cost")
    cases = {
        "second under half the first": [("faq/refund_time", t * 0.9), ("faq/shipping_cost", t * 0.4)],
        "together under the threshold": [("faq/refund_time", t * 0.45), ("faq/shipping_cost", t * 0.4)],
        "out_of_scope among the two": [("faq/refund_time", t * 0.6), ("out_of_scope", t * 0.5)],
        "confident but novel": [("faq/refund_time", t + 0.05), ("faq/shipping_cost", t * 0.9)],
        "not an intent of this kb": [("faq/refund_time", t * 0.6), ("faq/invoice", t * 0.5)],
    }
    for reason, ranking in cases.items():
        assert tiny_policy.did_you_mean(unsure("x", "en", t, *ranking), DialogueContext()) is None, reason
    asked = DialogueContext(options=("faq/shipping_cost", "faq/refund_time"))
    assert tiny_policy.did_you_mean(close, asked) is None


def test_a_person_is_a_titled_option_and_its_payload_hands_off(tiny_policy):
    t = tiny_policy.threshold
    parse = unsure("hmm", "zh", t, ("human_handoff", t * 0.6), ("order_status", t * 0.5))
    assert tiny_policy.option_title("human_handoff", "zh") == "转人工客服"
    # The first example with no entity in it: not "我的订单LM2023120981到哪了".
    assert tiny_policy.option_title("order_status", "zh") == "快递怎么还没到"
    assert tiny_policy.did_you_mean(parse, DialogueContext()) == ("human_handoff", "order_status")


def test_a_payload_must_name_a_known_intent(tiny):
    weird, handoff = tiny("/no_such_intent", "/human_handoff")
    assert weird.parse.intent.name != "no_such_intent" and weird.parse.intent.confidence < 1.0
    assert handoff.kind == ActionKind.HANDOFF_REQUESTED


# -- articles ---------------------------------------------------------------------------------


def test_article_answer_with_title_and_passage_in_both_languages(tiny):
    en, zh = tiny("how should I dry my wool sweater", "音箱怎么配对蓝牙")
    assert (en.kind, en.source, en.language) == (ActionKind.ARTICLE, "article:caring-for-wool", "en")
    assert en.text.startswith('Here\'s what I found in "Caring for wool sweaters":\n')
    assert "Dry wool flat on a towel" in en.text
    assert (zh.kind, zh.source, zh.language) == (ActionKind.ARTICLE, "article:speaker-pairing", "zh")
    assert zh.text.startswith("为您找到《智能音箱蓝牙配对》中的相关内容：\n")


@pytest.mark.slow
def test_default_kb_article_out_of_scope_and_handoff(lumo):
    kb, nlu, index = lumo
    article, weather, person = converse(
        kb,
        nlu,
        index,
        ["how do I pair the smart speaker with my phone", "what's the capital of Peru", "我要找人工客服"],
    )
    assert (article.kind, article.source) == (ActionKind.ARTICLE, "article:smart-speaker-setup")
    assert article.text.startswith(
        'Here\'s what I found in "Setting up and pairing the Lumo smart speaker":\n'
    )
    assert (weather.kind, weather.source) == (ActionKind.FALLBACK, "utter_out_of_scope")
    assert weather.text == kb.response("utter_out_of_scope", "en").text and weather.buttons == [PERSON_EN]
    assert person.kind == ActionKind.HANDOFF_REQUESTED
    assert person.text == kb.response("utter_human_handoff", "zh").text


def test_the_article_floor_is_the_nlus_novelty_floor_and_decides(tiny_kb, tiny_nlu, tiny_index, tiny_policy):
    assert tiny_policy.article_floor == tiny_nlu.classifier.calibration.min_similarity
    text = "how should I dry my wool sweater"
    encoder = tiny_nlu.classifier.featurizer.encoder
    score = tiny_index.search(encoder.encode([text])[0], k=1)[0].score
    assert score >= tiny_policy.article_floor
    stricter = DialoguePolicy(
        tiny_kb,
        tiny_nlu,
        tiny_index,
        encoder=encoder,
        threshold=tiny_nlu.threshold,
        article_floor=score + 0.001,
    )
    assert decide(stricter, tiny_nlu.parse(text)).kind != ActionKind.ARTICLE


def test_a_floor_learnt_from_the_index_agrees(tiny_kb, tiny_nlu, tiny_index):
    encoder = tiny_nlu.classifier.featurizer.encoder
    floor = index_floor(tiny_index, encoder)
    assert floor == pytest.approx(tiny_nlu.classifier.calibration.min_similarity, abs=0.03)
    policy = DialoguePolicy(
        tiny_kb, tiny_nlu, tiny_index, encoder=encoder, threshold=tiny_nlu.threshold, article_floor=floor
    )
    wool, peru = (
        decide(policy, tiny_nlu.parse(t))
        for t in ("how should I dry my wool sweater", "what's the capital of Peru")
    )
    assert wool.source == "article:caring-for-wool"
    assert peru.kind == ActionKind.FALLBACK


def test_an_article_must_be_the_nearest_entry_in_the_customers_language():
    passage = Entry("article", "Dry wool flat.", "en", article_id="wool", title="Wool", section="Drying")
    example = Entry("example", "how much is shipping", "en", intent="faq/shipping_cost")
    assert pick_article([Hit(passage, 0.91), Hit(example, 0.90)], 0.87, "en") == Hit(passage, 0.91)
    assert pick_article([Hit(example, 0.93), Hit(passage, 0.91)], 0.87, "en") is None
    assert pick_article([Hit(passage, 0.86)], 0.87, "en") is None
    assert pick_article([Hit(passage, 0.91)], 0.87, "zh") is None
    assert pick_article([], 0.87, "en") is None


# -- fallbacks and the way to a person --------------------------------------------------------


def test_out_of_scope_falls_back_with_a_person_button(tiny):
    en, zh = tiny("what's the capital of Peru", "帮我算一下微积分")
    assert (en.kind, en.source, en.intent) == (ActionKind.FALLBACK, "utter_out_of_scope", "out_of_scope")
    # The tiny knowledge base has no utter_out_of_scope: Baton's own wording, in each language.
    assert en.text.startswith("Sorry, I can't help with that.") and en.buttons == [PERSON_EN]
    assert zh.text.startswith("抱歉，这个问题我暂时无法解答哦。") and zh.buttons == [PERSON_ZH]


def test_not_understood_falls_back_to_utter_default_with_a_person_button(tiny):
    (action,) = tiny("asdf")
    assert (action.kind, action.source, action.intent) == (ActionKind.FALLBACK, "utter_default", FALLBACK)
    assert action.text == "Sorry, could you rephrase that?" and action.buttons == [PERSON_EN]


def test_a_broken_template_is_never_sent(tiny_kb, tiny_nlu, tiny_index):
    # An unclosed brace: sent as it is, the customer would read "{order_number".
    broken = Variation("Refunds for {order_number arrive in 1-3 days.")
    kb = dataclasses.replace(tiny_kb, responses={**tiny_kb.responses, "utter_faq/refund_time": [broken]})
    policy = DialoguePolicy.from_engine(kb, tiny_nlu, tiny_index)
    sure = IntentScore("faq/refund_time", 0.99)
    action = decide(policy, ParseResult("how long does a refund take", "en", sure, (sure,)))
    assert (action.kind, action.source, action.intent) == (
        ActionKind.FALLBACK,
        "cannot_complete",
        "faq/refund_time",
    )
    assert "{" not in action.text and action.buttons == [PERSON_EN]


def test_a_knowledge_base_text_in_the_wrong_language_is_replaced(tiny_policy):
    # tiny's utter_default is English only: a Chinese customer gets Baton's Chinese wording.
    t = tiny_policy.threshold
    action = decide(tiny_policy, unsure("嗯？？", "zh", t, ("goodbye", t * 0.4), ("greet", t * 0.1)))
    assert (action.source, action.language) == ("utter_default", "zh")
    assert action.text.startswith("抱歉，我没太理解您的意思") and action.buttons == [PERSON_ZH]


def test_human_handoff_is_requested_in_both_languages_even_mid_question(tiny, seeded_orders):
    zh, en = tiny("转人工", "I want a human")
    assert (zh.kind, zh.source, zh.language) == (ActionKind.HANDOFF_REQUESTED, "utter_human_handoff", "zh")
    assert zh.text.startswith("好的，正在为您转接人工客服") and en.text.startswith("Sure, I'm connecting you")
    ask, person = tiny("我的快递到哪了", "转人工 LM2024051234", orders_url=seeded_orders)
    assert ask.kind == ActionKind.ASK_SLOT
    assert person.kind == ActionKind.HANDOFF_REQUESTED and person.context.waiting_intent is None
    (pressed,) = tiny("/human_handoff", context=DialogueContext(language="zh"))
    assert (pressed.kind, pressed.language) == (ActionKind.HANDOFF_REQUESTED, "zh")


# -- language and context ---------------------------------------------------------------------


def test_the_reply_language_follows_the_customer(tiny):
    actions = tiny("你好", "hello", "退款要多久", "how much is shipping", "👍")
    assert [a.language for a in actions] == ["zh", "en", "zh", "en", "en"]
    assert [a.text for a in actions[:4]] == [
        "您好！",
        "Hello!",
        "退款 1-3 天到账。",
        "Shipping is free over 99 yuan.",
    ]
    assert [a.context.language for a in actions] == ["zh", "en", "zh", "en", "en"]
    # An emoji or a bare order number says nothing about the language: a Chinese conversation stays Chinese.
    for text in ("👍", "LM2024051234"):
        (action,) = tiny(text, context=DialogueContext(language="zh"))
        assert action.language == "zh", text
    (action,) = tiny("ok", context=DialogueContext(language="zh"))
    assert action.language == "en"  # a Latin word is English


def test_the_context_round_trips_through_json_form():
    context = DialogueContext(
        "zh", {"order_number": "LM2024051234"}, "order_status", "order_number", ("a", "b")
    )
    assert DialogueContext.from_dict(context.to_dict()) == context
    assert DialogueContext.from_dict({}) == DialogueContext()


def test_the_chat_session_keeps_context_and_connector_across_turns(
    tiny_kb, tiny_nlu, tiny_index, seeded_orders, tmp_path
):
    bot = TrainedBot(tiny_kb, tiny_nlu, tiny_index, tmp_path)
    with ChatSession(bot, DemoOrderConnector.from_url(seeded_orders)) as session:
        ask = session.send("where is my parcel")
        answer = session.send("LM2024051234")
        lost = session.send("asdf")
    assert ask.kind == ActionKind.ASK_SLOT and answer.kind == ActionKind.ANSWER
    assert "[Talk to a person -> /human_handoff]" in render(lost)
    assert "[order_status 1.00, en, utter_order_status]" in render(answer)
