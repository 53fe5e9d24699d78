"""The signals that a customer needs a person, read on every customer turn, and the decision.

`EscalationPolicy.observe` takes what one turn produced (`TurnFacts`: the message, what the
NLU understood, what the bot did, the message's sentiment) and the conversation's running
`SignalState`, and returns the new state and, when a person is needed, an `Escalation` with
DESIGN.md's reason codes and a severity. Every threshold comes from the knowledge base's
``handoff.yml`` (`knowledge_index.handoff_file.HandoffConfig`).

The signals:

- ``explicit_request``: the ``human_handoff`` intent, or a phrase such as 转人工 / "talk to a
  person" (`asks_for_person`), a safety net for when the classifier misses one. Always honoured.
- ``sensitive_topic``: an intent listed in ``sensitive_intents`` (``complaint``...).
- ``negative_sentiment``: one message at least ``anger_threshold`` angry (insults, fury,
  threats), or ``negative_streak`` negative messages in a row (the trend). One mildly
  annoyed message is neither.
- ``repeated_question``: the same question asked ``repeated_question_after`` times. Two
  questions are the same when the NLU gives them the same intent with no conflicting entity
  (so a rephrasing counts, and "and order LM2?" after "where is LM1?" does not); when the NLU
  understood neither, when their character n-grams are ``repeat_similarity`` alike.
- ``fallback_streak``: the bot fell back (did not understand) ``fallback_streak`` times in a row.
- ``too_many_turns``: more than ``max_customer_turns`` customer turns since the conversation
  started or since the customer last said thanks or goodbye (a sign the matter was settled).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from knowledge_index.handoff_file import HandoffConfig
from knowledge_index.model import CJK_CHAR, SMALL_TALK_INTENTS

EXPLICIT_REQUEST = "explicit_request"
NEGATIVE_SENTIMENT = "negative_sentiment"
REPEATED_QUESTION = "repeated_question"
TOO_MANY_TURNS = "too_many_turns"
FALLBACK_STREAK = "fallback_streak"
SENSITIVE_TOPIC = "sensitive_topic"
# The order reasons are listed in when several fire at once: the customer's own words first, then
# their mood (an insult the NLU files under "complaint" is anger before it is a topic).
REASONS = (
    EXPLICIT_REQUEST,
    NEGATIVE_SENTIMENT,
    SENSITIVE_TOPIC,
    REPEATED_QUESTION,
    FALLBACK_STREAK,
    TOO_MANY_TURNS,
)
# How urgent each reason is (1-3); the queue serves higher severity sooner.
SEVERITY = {
    EXPLICIT_REQUEST: 2,
    SENSITIVE_TOPIC: 3,
    NEGATIVE_SENTIMENT: 3,
    REPEATED_QUESTION: 2,
    FALLBACK_STREAK: 1,
    TOO_MANY_TURNS: 1,
}

HANDOFF_INTENT = "human_handoff"
NOT_UNDERSTOOD = frozenset({"nlu_fallback", "out_of_scope"})
# Small talk, and asking for a person (honoured on its own), is never "a question that keeps coming back".
SMALL_TALK = frozenset({*SMALL_TALK_INTENTS, HANDOFF_INTENT})
# Saying these means the matter was settled: the turn count starts again.
SETTLED = frozenset({"thanks", "goodbye"})
RECENT_QUESTIONS = 8  # questions remembered for the repeat check
# NLU confidence above which a mention of human agents is taken as part of another question.
SURE_ENOUGH = 0.9

# The safety net for "I want a person" (the classifier is the first line). Chinese: asking to be
# put through (转人工, 找人工, 人工服务), for a real person, for the service staff to come out.
_PERSON_ZH = re.compile(
    r"[转接找要换叫]人工|人工(?:客服|服务)?[!！。.\s]*$|^[\s请我要]*人工(?!智能)|真人|活人|接线员|转接"
    r"|(?:找|叫|要|换).{0,4}客服|客服.{0,4}(?:出来|在吗|在不在)"
)
# 人工 anywhere else (not 人工智能) is a mention: a request unless the NLU is sure the message is
# another question ("人工客服几点下班": service hours).
_PERSON_ZH_MENTION = re.compile(r"人工(?!智能)")
_LIVE = r"(?:(?:real|live|actual)\s+)?"
_WHO = r"(?:human|person|agent|representative|rep|operator|staff|manager|supervisor|someone|somebody)"
_PERSON_EN = re.compile(
    # "talk to a real person", "speak with someone", "connect me to an agent"
    rf"\b(?:talk|speak|chat)\s+(?:to|with)\s+(?:a|an|the|your|some|one of your)?\s*{_LIVE}{_WHO}\b"
    rf"|\b(?:connect|transfer|put)\s+me\s+(?:through\s+)?(?:to|with)\s+(?:a|an|the|your)?\s*{_LIVE}{_WHO}\b"
    # "I want a human", "can I get an agent", "need a real person"
    rf"|\b(?:want|need|get(?:\s+me)?|give\s+me|have)\s+(?:a|an)\s+{_LIVE}(?:human|person|agent|representative|operator)\b"
    r"|\b(?:real|live|actual)\s+(?:human|person|agent)\b"
    # the whole message is "agent" / "human please" / "representative!"
    r"|^\W*(?:an?\s+)?(?:human|agent|representative|operator|person)\W*(?:please|pls|plz|now)?\W*$",
    re.IGNORECASE,
)
# "That did not answer my question": the customer is asking the previous question again, in
# whatever words, so the turn counts as one more asking of it.
_ASKED_AGAIN = re.compile(
    r"\b(?:doesn'?t|does not|didn'?t|did not|won'?t)\s+(?:answer|help)"
    r"|\bnot what i (?:asked|meant|wanted)|\b(?:i|i've|i have) (?:already )?asked\b"
    r"|\basked (?:you )?(?:twice|already|again|before)|\b(?:second|third|fourth|fifth) time\b"
    r"|\bhow many times\b|\byou (?:said|told me)\b|\bthat'?s not (?:it|my question|what i)"
    r"|\banswer (?:my|the) question|\bread my (?:question|message)"
    r"|没用|没回答|答非所问|不是问|我问的是|再问一[遍次]|问了?(?:两|三|几|好几)[遍次]|说了?(?:两|三|几|好几)[遍次]"
    r"|第[二三四五][遍次]|你说的|你刚才说|刚说的|没解决|不是这个",
    re.IGNORECASE,
)

_WORD = re.compile(r"[a-z0-9]+")


def asks_for_person(text: str) -> bool:
    """True if ``text`` asks for a human agent in so many words (Chinese or English)."""
    return bool(_PERSON_ZH.search(text) or _PERSON_EN.search(text))


def mentions_person(text: str) -> bool:
    """True if ``text`` mentions human agents (人工) without plainly asking for one."""
    return bool(_PERSON_ZH_MENTION.search(text))


@dataclass(frozen=True)
class TurnFacts:
    """What one customer turn produced, as the escalation policy needs it.

    Attributes:
        text: the customer's message.
        language: ``zh`` or ``en``.
        intent: the NLU's intent (``nlu_fallback`` and ``out_of_scope`` included).
        entities: ``(entity, value)`` pairs the NLU found.
        bot_action: what the bot did (`bot.dialogue.ActionKind` values: ``answer``,
            ``fallback``, ``handoff_requested``...).
        negative: the message's probability of being negative (0-1).
        anger: how angry the message is (0-1).
        confidence: the NLU's confidence in ``intent``.
        best_guess: when the NLU fell back, its most likely intent all the same (None if none).
    """

    text: str
    language: str
    intent: str
    entities: tuple[tuple[str, str], ...] = ()
    bot_action: str = "answer"
    negative: float = 0.0
    anger: float = 0.0
    confidence: float = 1.0
    best_guess: str | None = None

    @property
    def topic(self) -> str:
        """What the message is about for the repeat check: the intent, else the NLU's best guess."""
        if self.intent in NOT_UNDERSTOOD and self.best_guess and self.best_guess not in NOT_UNDERSTOOD:
            return self.best_guess
        return self.intent


@dataclass(frozen=True)
class Question:
    """A question the customer asked, and how often.

    ``intent`` is its topic; ``aliases`` other topics the NLU gave it when the customer said
    they were asking it again ("that doesn't answer my question, where is my refund?").
    """

    intent: str
    text: str
    entities: tuple[tuple[str, str], ...] = ()
    count: int = 1
    aliases: tuple[str, ...] = ()

    @property
    def topics(self) -> frozenset[str]:
        """Every topic this question has been asked under."""
        return frozenset((self.intent, *self.aliases))


@dataclass(frozen=True)
class SignalState:
    """What the policy remembers of a conversation between turns (JSON in Redis)."""

    customer_turns: int = 0  # since the start, or since the last thanks/goodbye
    fallback_streak: int = 0
    negative_streak: int = 0
    questions: tuple[Question, ...] = ()
    trace: tuple[dict[str, Any], ...] = field(default=())  # the last few turns' signals, for agents

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SignalState:
        """The inverse of `to_dict`; None or {} is a fresh conversation."""
        if not data:
            return cls()
        questions = tuple(
            Question(
                q["intent"],
                q["text"],
                tuple(tuple(e) for e in q.get("entities", ())),
                int(q["count"]),
                tuple(q.get("aliases", ())),
            )
            for q in data.get("questions", ())
        )
        return cls(
            customer_turns=int(data.get("customer_turns", 0)),
            fallback_streak=int(data.get("fallback_streak", 0)),
            negative_streak=int(data.get("negative_streak", 0)),
            questions=questions,
            trace=tuple(data.get("trace", ())),
        )


@dataclass(frozen=True)
class Escalation:
    """The decision to hand a conversation to a person.

    Attributes:
        reasons: reason codes, most telling first (`REASONS` order).
        severity: 1 (the bot is stuck) to 3 (an angry or sensitive case).
    """

    reasons: tuple[str, ...]
    severity: int

    @property
    def reason(self) -> str:
        """The first reason, recorded on the conversation."""
        return self.reasons[0]


class EscalationPolicy:
    """Reads one turn's signals and decides whether a person is needed.

    Args:
        config: the knowledge base's escalation settings.
    """

    def __init__(self, config: HandoffConfig) -> None:
        self.config = config
        self.sensitive = frozenset(config.sensitive_intents)

    @classmethod
    def from_kb_settings(cls, settings: Mapping[str, Any]) -> EscalationPolicy:
        """A policy from a loaded knowledge base's ``handoff`` dict."""
        return cls(HandoffConfig.model_validate(dict(settings)))

    def observe(self, state: SignalState, facts: TurnFacts) -> tuple[SignalState, Escalation | None]:
        """The state after this turn, and an `Escalation` if this turn needs a person."""
        config = self.config
        fired: set[str] = set()
        classified = facts.bot_action == "handoff_requested" or facts.intent == HANDOFF_INTENT
        mention = mentions_person(facts.text) and not self._sure_of_something_else(facts)
        if classified or asks_for_person(facts.text) or mention:
            fired.add(EXPLICIT_REQUEST)
        if facts.intent in self.sensitive:
            fired.add(SENSITIVE_TOPIC)

        negative_streak = (
            state.negative_streak + 1 if facts.negative >= config.negative_sentiment_threshold else 0
        )
        if facts.anger >= config.anger_threshold or negative_streak >= config.negative_streak:
            fired.add(NEGATIVE_SENTIMENT)

        questions, repeats = self._remember(state.questions, facts)
        if repeats >= config.repeated_question_after:
            fired.add(REPEATED_QUESTION)

        if facts.bot_action == "fallback":
            fallback_streak = state.fallback_streak + 1
        elif facts.bot_action == "clarify":  # half understood: neither a fallback nor an answer
            fallback_streak = state.fallback_streak
        else:
            fallback_streak = 0
        if fallback_streak >= config.fallback_streak:
            fired.add(FALLBACK_STREAK)

        customer_turns = 0 if facts.intent in SETTLED else state.customer_turns + 1
        if customer_turns > config.max_customer_turns:
            fired.add(TOO_MANY_TURNS)

        trace = (
            *state.trace[-(RECENT_QUESTIONS - 1) :],
            {
                "intent": facts.intent,
                "action": facts.bot_action,
                "negative": round(facts.negative, 3),
                "anger": round(facts.anger, 3),
                "repeats": repeats,
                "fired": sorted(fired, key=REASONS.index),
            },
        )
        new_state = replace(
            state,
            customer_turns=customer_turns,
            fallback_streak=fallback_streak,
            negative_streak=negative_streak,
            questions=questions,
            trace=trace,
        )
        if not fired:
            return new_state, None
        reasons = tuple(sorted(fired, key=REASONS.index))
        return new_state, Escalation(reasons, max(SEVERITY[r] for r in reasons))

    @staticmethod
    def _sure_of_something_else(facts: TurnFacts) -> bool:
        """The NLU is sure the message is a question it can answer ("人工客服几点下班": service
        hours), so a mention of a person is not a request for one."""
        return (
            facts.intent not in NOT_UNDERSTOOD
            and facts.intent not in SMALL_TALK
            and facts.confidence >= SURE_ENOUGH
        )

    def _remember(self, questions: Sequence[Question], facts: TurnFacts) -> tuple[tuple[Question, ...], int]:
        """The remembered questions with this turn's counted in, and how often it has now been asked."""
        topic = facts.topic
        again = bool(_ASKED_AGAIN.search(facts.text))
        if topic in SMALL_TALK or (topic in NOT_UNDERSTOOD and len(facts.text.strip()) < 4 and not again):
            return tuple(questions), 0
        kept = list(questions)
        match = next((i for i in range(len(kept) - 1, -1, -1) if self._same_question(kept[i], facts)), None)
        if match is None and again and kept:
            match = (
                len(kept) - 1
            )  # "not what I asked": the latest question, whatever the NLU made of this one
        if match is not None:
            earlier = kept.pop(match)
            merged = dict(earlier.entities) | dict(facts.entities)
            aliases = earlier.aliases
            if topic not in earlier.topics and topic not in NOT_UNDERSTOOD:
                aliases = (*aliases, topic)
            question = Question(
                earlier.intent, facts.text, tuple(sorted(merged.items())), earlier.count + 1, aliases
            )
            kept.append(question)  # the latest question goes last
            return tuple(kept[-RECENT_QUESTIONS:]), question.count
        kept.append(Question(topic, facts.text, tuple(sorted(facts.entities))))
        return tuple(kept[-RECENT_QUESTIONS:]), 1

    def _same_question(self, earlier: Question, facts: TurnFacts) -> bool:
        topic = facts.topic
        if earlier.intent not in NOT_UNDERSTOOD and topic not in NOT_UNDERSTOOD:
            if topic not in earlier.topics:
                return False
            mine = dict(facts.entities)
            # A different value of the same entity is a different question (another order).
            return all(mine.get(name, value) == value for name, value in earlier.entities)
        return similarity(earlier.text, facts.text) >= self.config.repeat_similarity


def _grams(text: str) -> Counter[str]:
    """Character n-grams: bigrams for Chinese, 3-grams inside words for English."""
    lowered = text.lower()
    grams: Counter[str] = Counter()
    cjk = "".join(CJK_CHAR.findall(lowered))
    grams.update(cjk[i : i + 2] for i in range(len(cjk) - 1))
    grams.update(cjk)
    for word in _WORD.findall(lowered):
        padded = f" {word} "
        grams.update(padded[i : i + 3] for i in range(len(padded) - 2))
    return grams


def similarity(a: str, b: str) -> float:
    """Cosine of two texts' character n-gram counts (0-1)."""
    first, second = _grams(a), _grams(b)
    if not first or not second:
        return 0.0
    dot = sum(count * second[gram] for gram, count in first.items())
    return dot / math.sqrt(sum(c * c for c in first.values()) * sum(c * c for c in second.values()))
