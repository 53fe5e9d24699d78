"""The escalation policy: each signal fires when it should, and not before."""

from __future__ import annotations

import pytest

from handoff.signals import (
    EscalationPolicy,
    SignalState,
    TurnFacts,
    asks_for_person,
    similarity,
)
from knowledge_index.handoff_file import HandoffConfig
from knowledge_index.model import SMALL_TALK_INTENTS

POLICY = EscalationPolicy(HandoffConfig(sensitive_intents=["complaint"]))


def run(turns: list[TurnFacts], policy: EscalationPolicy = POLICY) -> list[tuple[str, ...]]:
    """The reasons fired at each turn (empty tuple: no escalation), the state carried through JSON."""
    state = SignalState()
    fired = []
    for facts in turns:
        state, escalation = policy.observe(SignalState.from_dict(state.to_dict()), facts)
        fired.append(escalation.reasons if escalation else ())
    return fired


def faq(text: str, intent: str = "faq/refund_time", **kw) -> TurnFacts:
    return TurnFacts(text=text, language="en", intent=intent, **kw)


@pytest.mark.parametrize(
    "text",
    [
        "转人工",
        "我要人工客服",
        "叫你们客服出来",
        "找真人",
        "agent",
        "Agent please!",
        "talk to a human",
        "can I speak to a real person",
        "representative please",
        "connect me to an agent",
        "I want a human",
    ],
)
def test_a_plain_request_for_a_person_is_recognised(text):
    assert asks_for_person(text)


@pytest.mark.parametrize(
    "text",
    [
        "人工智能是什么",
        "where is my order",
        "I want the delivery person to call me",
        "I need someone to help with my order",
        "can someone tell me where my parcel is",
        "human resources",
    ],
)
def test_mentioning_a_person_is_not_asking_for_one(text):
    assert not asks_for_person(text)


def test_an_explicit_request_escalates_on_its_own_turn_even_when_the_classifier_missed_it():
    fired = run(
        [faq("hi", "greet"), faq("can I talk to a real person", "nlu_fallback", bot_action="fallback")]
    )
    assert fired == [(), ("explicit_request",)]


def test_the_handoff_intent_is_an_explicit_request():
    assert run([faq("get me out of here", "human_handoff", bot_action="handoff_requested")]) == [
        ("explicit_request",)
    ]


def test_a_sensitive_intent_escalates_with_high_severity():
    _, escalation = POLICY.observe(SignalState(), faq("I want to complain", "complaint"))
    assert escalation is not None and escalation.reasons == ("sensitive_topic",) and escalation.severity == 3


def test_one_angry_message_escalates_but_mild_annoyance_does_not():
    assert run([faq("slow, annoying", negative=0.9, anger=0.3)]) == [()]
    assert run([faq("you useless idiots", negative=0.99, anger=0.9)]) == [("negative_sentiment",)]


def test_a_negative_trend_escalates_at_the_configured_streak():
    negative = [faq(f"still bad {i}", f"faq/topic_{i}", negative=0.9, anger=0.2) for i in range(3)]
    assert run(negative) == [(), (), ("negative_sentiment",)]
    broken = [negative[0], faq("ok thanks", "faq/other", negative=0.1), negative[1], negative[2]]
    assert run(broken) == [(), (), (), ()]


def test_the_same_question_a_third_time_escalates_rephrasings_included():
    turns = [
        faq("when will my refund arrive?"),
        faq("that doesn't answer it, where is my money"),
        faq("refund. when."),
    ]
    assert run(turns) == [(), (), ("repeated_question",)]


@pytest.mark.parametrize("intent", [*SMALL_TALK_INTENTS, "human_handoff"])
def test_small_talk_and_asking_for_a_person_are_never_a_repeated_question(intent):
    fired = run([faq("ok then", intent, bot_action="answer") for _ in range(4)])
    assert all("repeated_question" not in reasons for reasons in fired)


def test_a_different_order_number_is_a_different_question():
    turns = [
        faq("where is LM1", "order_status", entities=(("order_number", "LM1"),)),
        faq("and LM2?", "order_status", entities=(("order_number", "LM2"),)),
        faq("and LM3?", "order_status", entities=(("order_number", "LM3"),)),
    ]
    assert run(turns) == [(), (), ()]


def test_unclassified_repeats_are_matched_by_their_words():
    turns = [
        faq(t, "nlu_fallback", bot_action="clarify")
        for t in (
            "the blender lid is cracked",
            "blender lid cracked, what now",
            "my blender lid is cracked!!",
        )
    ]
    assert run(turns)[-1] == ("repeated_question",)
    assert similarity("the blender lid is cracked", "how do I pay with a gift card") < 0.5


def test_two_fallbacks_in_a_row_escalate_and_an_answer_in_between_resets():
    fb = faq("asdfgh", "nlu_fallback", bot_action="fallback")
    fb2 = faq("the thing with the thing", "nlu_fallback", bot_action="fallback")
    assert run([fb, fb2]) == [(), ("fallback_streak",)]
    assert run([fb, faq("refund?"), fb2]) == [(), (), ()]


def test_the_ninth_customer_turn_escalates_unless_the_customer_said_thanks():
    long = [faq(f"question {i}", f"faq/topic_{i}") for i in range(9)]
    assert run(long)[-1] == ("too_many_turns",) and all(not f for f in run(long)[:-1])
    settled = [*long[:5], faq("thanks!", "thanks"), *long[5:]]
    assert all(not f for f in run(settled))


def test_reasons_are_ordered_with_the_customers_words_first():
    _, escalation = POLICY.observe(
        SignalState(), faq("this is a disgrace, get me a human", "complaint", negative=0.99, anger=0.95)
    )
    assert escalation is not None
    assert escalation.reasons == ("explicit_request", "negative_sentiment", "sensitive_topic")


def test_thresholds_come_from_the_configuration():
    strict = EscalationPolicy(
        HandoffConfig(fallback_streak=3, repeated_question_after=4, max_customer_turns=2)
    )
    fb = faq("??", "nlu_fallback", bot_action="fallback")
    assert run([fb, fb], strict) == [(), ()]
    assert run([fb, fb, fb], strict)[-1] == ("fallback_streak", "too_many_turns")
    assert run([faq("a", "faq/x"), faq("b", "faq/y")], strict) == [(), ()]
    assert run([faq("a", "faq/x"), faq("b", "faq/y"), faq("c", "faq/z")], strict)[-1] == ("too_many_turns",)
