"""The bot's turn decision: from what the NLU understood to what the bot says.

:class:`DialoguePolicy` takes a :class:`~bot.nlu.types.ParseResult` and the
:class:`DialogueContext` carried from the previous turn, and returns a :class:`BotAction`
with the new context. In order, a turn is:

1. **A button press.** A message that is exactly ``/intent`` (Rasa's payload form) for an
   intent of the knowledge base is that intent with confidence 1.0 (:meth:`DialoguePolicy.payload_parse`).
2. **A request for a person** (``human_handoff``) is always honoured: ``handoff_requested``.
3. **A slot the previous turn asked for.** A message that carries it (or is just the value,
   e.g. a bare order number) completes the waiting intent, unless it is confidently about
   something else.
4. **A confident intent** is answered with its response in the customer's language, its
   placeholders filled from the remembered slots; a missing slot is asked for with
   ``utter_ask_<slot>``. ``{status}`` comes from the order connector, by ``order_number``.
   A response whose template is broken (an unclosed ``{``) is not sent: the bot says it cannot
   complete the request and offers a person.
5. **Anything else** (``nlu_fallback``, ``out_of_scope``): an article passage if one is a
   close match, else "did you mean A or B?" if the top two intents are close, else a polite
   fallback with a "talk to a person" button.

"Close", for an article passage (:func:`pick_article`): the passage is the nearest entry of the
whole index (closer than every FAQ example and every other passage), it is in the customer's
language, and its cosine clears a floor learnt from the data, not a constant. The floor is the
NLU's novelty floor (``calibration.min_similarity``: the similarity that 98 % of training examples
have to their nearest neighbour) or, for a model without one, the same statistic computed over
the index's FAQ examples (:func:`index_floor`). On ``nlu_data`` with e5, relevant passages score
0.88-0.93 against a floor of 0.87, while off-topic questions reach at most 0.83 and their nearest
entry is usually an FAQ example. A close article wins over "did you mean": a message nearer to a
passage than to any FAQ example is about that passage, and the classifier's hesitation between
two intents is then noise (tiny_kb's "智能音箱怎么连接手机" splits between human_handoff and
order_status, yet the speaker article is what was asked for).

"Close", for two intents (:meth:`DialoguePolicy.did_you_mean`): the NLU fell back for low
confidence (not because the message is unlike everything it knows: then the top score is above
the threshold), the top two are real intents the bot can act on (not ``out_of_scope``), the
second has at least half the confidence of the first, together they hold at least the fallback
threshold (the doubt is between those two, not spread over many), and the customer was not just
asked about the same pair (no clarification loop: the second time, fall back and offer a person).

Button titles of "did you mean" are the first training example of each intent in the
customer's language that has no entity in it (knowledge managers write the plain phrasing
first: "退款多久到账", "how much is shipping"), else a title derived from the intent name;
``human_handoff`` is titled like the "talk to a person" button.

The reply language is the message's (``ParseResult.language``), except when the message says
nothing about it (no Chinese character, no Latin word once its entities are taken out): a button
payload, a bare order number, an emoji. Those keep the conversation's language.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.nlu.types import IntentScore, NLUEngine, ParseResult
from bot.orders import Order, OrderConnector, OrderLookupError
from knowledge_index.language import LATIN_WORD, detect_language
from knowledge_index.model import FALLBACK, LANGUAGES, OUT_OF_SCOPE, KnowledgeBase, Variation, has_cjk
from knowledge_index.templates import fill, placeholders, without_placeholders

if TYPE_CHECKING:
    from bot.nlu.engine import BatonNLU
    from bot.trained import TrainedBot
    from knowledge_index.encoders import Encoder
    from knowledge_index.index import Hit, VectorIndex

HANDOFF = "human_handoff"
PERSON_PAYLOAD = f"/{HANDOFF}"
ORDER_NUMBER = "order_number"
DEFAULT_LANGUAGE = "en"
# Placeholders the policy fills itself, never from a customer's entities.
_COMPUTED = frozenset({"status", "title", "passage", "option_a", "option_b"})
# A computed placeholder and the slot its value is looked up by.
_LOOKUPS = {"status": ORDER_NUMBER}
# Second intent's confidence relative to the first for the two to count as close.
_CLOSE_RATIO = 0.5
# Answering these leaves a pending slot question open ("ok, one moment" before the number).
_KEEPS_WAITING = frozenset({"greet", "thanks", "affirm"})
# Intents a message carrying the awaited slot may have and still complete the waiting intent.
_COMPLETES_WAITING = frozenset({FALLBACK, OUT_OF_SCOPE, "greet", "thanks", "affirm", "deny"})
# Same statistic as the NLU's novelty floor (bot.nlu.classifier), for a model without one.
_FLOOR_QUANTILE = 0.02
_FLOOR_MAX_EXAMPLES = 2000  # the pairwise matrix grows with the square

_PAYLOAD = re.compile(r"/([A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)?)")

# Fallbacks for the responses the policy needs when a knowledge base lacks them (or lacks the
# customer's language), worded for any shop.
_BUILTIN_RESPONSES: dict[str, dict[str, str]] = {
    "utter_default": {
        "zh": "抱歉，我没太理解您的意思，可以换个说法再描述一下吗？如需人工客服，也可以直接告诉我哦。",
        "en": "Sorry, I didn't quite understand that. Could you rephrase it? If you'd prefer, I can connect you to a person.",
    },
    "utter_out_of_scope": {
        "zh": "抱歉，这个问题我暂时无法解答哦。如需人工客服，随时告诉我就好～",
        "en": "Sorry, I can't help with that. If you'd like to talk to a person, just let me know.",
    },
    "utter_human_handoff": {
        "zh": "好的，正在为您转接人工客服，请稍候～",
        "en": "Sure, I'm connecting you to a member of our team now, please hold on.",
    },
    "utter_did_you_mean": {
        "zh": "请问您想咨询的是{option_a}，还是{option_b}呢？",
        "en": "Did you mean {option_a} or {option_b}?",
    },
    "utter_article": {
        "zh": "为您找到《{title}》中的相关内容：\n{passage}",
        "en": 'Here\'s what I found in "{title}":\n{passage}',
    },
    "utter_ask_order_number": {
        "zh": "麻烦提供一下您的订单号哦～",
        "en": "Could you tell me your order number, please?",
    },
    "utter_order_status": {
        "zh": "您的订单 {order_number}：{status}",
        "en": "Your order {order_number}: {status}",
    },
}
# The policy's own wording. A knowledge base cannot override these: its loader accepts only
# responses of intents, utter_ask_<slot> and the system responses above.
_MESSAGES: dict[str, dict[str, str]] = {
    "person_button": {"zh": "转人工客服", "en": "Talk to a person"},
    "order_not_found": {
        "zh": "抱歉，没有查到订单号为 {order_number} 的订单。请核对一下订单号再发给我，或者转人工客服帮您查询。",
        "en": "Sorry, I couldn't find an order with the number {order_number}. Please check the number and send it again, or talk to a person.",
    },
    "order_lookup_unavailable": {
        "zh": "抱歉，我这里暂时无法查询订单，没法告诉您订单 {order_number} 的状态。人工客服可以帮您查询。",
        "en": "Sorry, I can't look up orders here, so I can't tell you the status of order {order_number}. A person from our team can check it for you.",
    },
    "order_lookup_failed": {
        "zh": "抱歉，订单系统暂时无法访问，没能查到订单 {order_number}。请稍后再试，或者转人工客服帮您查询。",
        "en": "Sorry, I can't reach our order system right now, so I couldn't check order {order_number}. Please try again later, or talk to a person.",
    },
    "cannot_complete": {
        "zh": "抱歉，这件事我这里没法直接办理，人工客服可以帮您处理。",
        "en": "Sorry, I can't complete that here, but a person from our team can help you.",
    },
    "order_status_line": {"zh": "{status}（更新于 {time}）", "en": "{status} (updated {time})"},
    "quoted": {"zh": "“{text}”", "en": '"{text}"'},
}


class ActionKind(StrEnum):
    """What the bot does with a turn."""

    ANSWER = "answer"
    ASK_SLOT = "ask_slot"
    CLARIFY = "clarify"
    ARTICLE = "article"
    FALLBACK = "fallback"
    HANDOFF_REQUESTED = "handoff_requested"


@dataclass(frozen=True)
class DialogueContext:
    """What the policy remembers between turns of one conversation.

    Attributes:
        language: the conversation's language so far ("zh", "en"), None before the first turn.
        slots: remembered entity values by slot name (e.g. ``order_number``).
        waiting_intent: the intent whose response waits for ``waiting_slot``.
        waiting_slot: the slot the bot asked for.
        options: the intents the last "did you mean" offered (empty if it was not a clarification).
    """

    language: str | None = None
    slots: Mapping[str, str] = field(default_factory=dict)
    waiting_intent: str | None = None
    waiting_slot: str | None = None
    options: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for keeping the context with the conversation."""
        return {
            "language": self.language,
            "slots": dict(self.slots),
            "waiting_intent": self.waiting_intent,
            "waiting_slot": self.waiting_slot,
            "options": list(self.options),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DialogueContext:
        """Read the form written by :meth:`to_dict`."""
        return cls(
            language=data.get("language"),
            slots={str(k): str(v) for k, v in (data.get("slots") or {}).items()},
            waiting_intent=data.get("waiting_intent"),
            waiting_slot=data.get("waiting_slot"),
            options=tuple(data.get("options") or ()),
        )


@dataclass(frozen=True)
class BotAction:
    """The bot's decision for one turn.

    Attributes:
        kind: what the bot does.
        text: what it says, in ``language``.
        language: the reply language.
        intent: the intent acted on (the waiting intent when a slot completed it; the NLU's
            intent or ``nlu_fallback``/``out_of_scope`` otherwise).
        source: where the text came from: a response name (``utter_faq/refund_time``),
            ``article:<id>``, or one of the policy's own messages (``order_not_found``, ...).
        context: the context for the next turn.
        buttons: ``{"title", "payload"}`` for each button, payloads in the ``/intent`` form.
        parse: what the NLU understood (a button press appears as its intent at confidence 1.0).
    """

    kind: ActionKind
    text: str
    language: str
    intent: str
    source: str
    context: DialogueContext
    buttons: list[dict[str, str]] = field(default_factory=list)
    parse: ParseResult | None = None


@dataclass(frozen=True)
class _Turn:
    """One message being decided: what was understood, in which language, with which slots."""

    parse: ParseResult
    language: str
    slots: dict[str, str]
    previous: DialogueContext
    bare: bool  # the message is nothing but entity values (and punctuation or emoji)


def pick_article(hits: Sequence[Hit], floor: float, language: str) -> Hit | None:
    """The article passage to answer with, or None (see the module docstring).

    Args:
        hits: the index's nearest entries to the message, nearest first.
        floor: the cosine a passage must reach.
        language: the reply language; a passage in another language is not shown.
    """
    if not hits:
        return None
    nearest = hits[0]
    entry = nearest.entry
    if entry.kind != "article" or entry.language != language or nearest.score < floor:
        return None
    return nearest


def index_floor(index: VectorIndex, encoder: Encoder) -> float | None:
    """A closeness floor learnt from an index: the 2nd percentile of its FAQ examples'
    nearest-other-example cosine (the statistic of the NLU's novelty floor). None below two examples.
    """
    texts = [e.text for e in index.entries if e.kind == "example"]
    if len(texts) < 2:
        return None
    if len(texts) > _FLOOR_MAX_EXAMPLES:
        step = len(texts) / _FLOOR_MAX_EXAMPLES
        texts = [texts[int(i * step)] for i in range(_FLOOR_MAX_EXAMPLES)]
    vectors = encoder.encode(texts, kind="query")
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1.0)
    return float(np.quantile(similarity.max(axis=1), _FLOOR_QUANTILE))


def _written_in(text: str) -> str | None:
    """The language a template is written in, or None if it has no words."""
    words = without_placeholders(text)
    if not has_cjk(words) and not LATIN_WORD.search(words):
        return None
    return detect_language(words).language


def _message(name: str, language: str) -> str:
    texts = _MESSAGES[name]
    return texts.get(language, texts[DEFAULT_LANGUAGE])


def _without_entities(parse: ParseResult) -> str:
    text = parse.text
    for entity in sorted(parse.entities, key=lambda e: e.start, reverse=True):
        text = text[: entity.start] + " " + text[entity.end :]
    return text


class DialoguePolicy:
    """Decides the bot's turn. Build with :meth:`for_bot` or :meth:`from_engine`.

    Args:
        kb: the knowledge base (responses, intents, examples).
        nlu: the engine :meth:`respond` parses with.
        index: the vector index for article answers (None: no article answers).
        connector: the order system (None: order status is answered honestly as unavailable).
        encoder: encodes a message for the index (None: no article answers).
        threshold: the NLU's fallback threshold (None: unknown, so "did you mean" is not offered).
        article_floor: the cosine an article passage must reach (None: no article answers).
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        nlu: NLUEngine,
        index: VectorIndex | None = None,
        connector: OrderConnector | None = None,
        *,
        encoder: Encoder | None = None,
        threshold: float | None = None,
        article_floor: float | None = None,
    ) -> None:
        self.kb = kb
        self.nlu = nlu
        self.index = index
        self.connector = connector
        self.encoder = encoder
        self.threshold = threshold
        self.article_floor = article_floor
        self.intents = frozenset(kb.nlu.intents) | {HANDOFF}
        # Entities worth remembering: those some response shows, plus what a lookup needs.
        shown = {
            name
            for variations in kb.responses.values()
            for v in variations
            for name in placeholders(v.text) or ()
        }
        self.slot_names = frozenset((shown - _COMPUTED) | set(_LOOKUPS.values()))

    @classmethod
    def from_engine(
        cls,
        kb: KnowledgeBase,
        nlu: BatonNLU,
        index: VectorIndex | None = None,
        connector: OrderConnector | None = None,
    ) -> DialoguePolicy:
        """A policy over Baton's own engine: its threshold, encoder and novelty floor.

        Without a novelty floor (a model trained with no ``out_of_scope`` examples) the article
        floor is computed from the index, which encodes its FAQ examples once.
        """
        encoder = nlu.classifier.featurizer.encoder
        floor = nlu.classifier.calibration.min_similarity
        if floor is None and index is not None and encoder is not None:
            floor = index_floor(index, encoder)
        return cls(kb, nlu, index, connector, encoder=encoder, threshold=nlu.threshold, article_floor=floor)

    @classmethod
    def for_bot(cls, bot: TrainedBot, connector: OrderConnector | None = None) -> DialoguePolicy:
        """A policy over a trained bot (knowledge base, NLU and index of one version)."""
        return cls.from_engine(bot.kb, bot.nlu, bot.index, connector)

    # -- understanding ------------------------------------------------------------------------

    def payload_parse(self, text: str, language: str) -> ParseResult | None:
        """The parse of a button payload (``/faq/refund_time``), or None if ``text`` is not one.

        Only the exact form for a known intent counts, so a customer typing "/weird" is parsed normally.
        """
        match = _PAYLOAD.fullmatch(text.strip())
        if match is None or match.group(1) not in self.intents:
            return None
        score = IntentScore(match.group(1), 1.0)
        return ParseResult(text, language, score, (score,))

    async def respond(self, text: str, context: DialogueContext) -> BotAction:
        """Understand ``text`` (a button payload without the NLU) and decide the turn."""
        parse = self.payload_parse(text, context.language or DEFAULT_LANGUAGE) or self.nlu.parse(text)
        return await self.decide(parse, context)

    # -- deciding -----------------------------------------------------------------------------

    async def decide(self, parse: ParseResult, context: DialogueContext) -> BotAction:
        """The bot's action for a message understood as ``parse``, given the conversation so far."""
        payload = self.payload_parse(parse.text, context.language or parse.language)
        rest = "" if payload is not None else _without_entities(parse)
        parse = payload or parse
        slots = dict(context.slots)
        for entity in reversed(parse.entities):  # the first value of each entity in the message wins
            if entity.entity in self.slot_names:
                slots[entity.entity] = entity.value
        turn = _Turn(
            parse=parse,
            language=self._language(parse, context, rest),
            slots=slots,
            previous=context,
            bare=payload is None and not has_cjk(rest) and not LATIN_WORD.search(rest),
        )
        intent = parse.intent.name
        if intent == HANDOFF:
            return self._handoff(turn)
        waiting = context.waiting_intent
        if (
            waiting is not None
            and context.waiting_slot in {e.entity for e in parse.entities}
            and (turn.bare or intent == waiting or intent in _COMPLETES_WAITING)
        ):
            action = await self._take_up(waiting, turn)
            if action is not None:
                return action
        if intent not in (FALLBACK, OUT_OF_SCOPE):
            action = await self._take_up(intent, turn)
            if action is not None:
                return action
        return self._not_understood(turn)

    def did_you_mean(self, parse: ParseResult, previous: DialogueContext) -> tuple[str, str] | None:
        """The two intents to offer for a message the NLU was unsure of, or None if they are not close.

        See the module docstring for the rule.
        """
        if self.threshold is None or parse.intent.name != FALLBACK or len(parse.ranking) < 2:
            return None
        first, second = parse.ranking[0], parse.ranking[1]
        for score in (first, second):
            if score.name in (FALLBACK, OUT_OF_SCOPE) or score.name not in self.intents:
                return None
            if score.name != HANDOFF and self._response(f"utter_{score.name}", DEFAULT_LANGUAGE) is None:
                return None
        if first.confidence >= self.threshold:
            return None  # a confident guess that still fell back: the message is unlike anything known
        if second.confidence < _CLOSE_RATIO * first.confidence:
            return None
        if first.confidence + second.confidence < self.threshold:
            return None
        if set(previous.options) == {first.name, second.name}:
            return None
        return first.name, second.name

    def option_title(self, intent: str, language: str) -> str:
        """The human-readable title of an intent for a "did you mean" button (module docstring)."""
        if intent == HANDOFF:
            return _message("person_button", language)
        examples = [
            e
            for e in self.kb.nlu.examples
            if e.intent == intent and ("zh" if has_cjk(e.text) else "en") == language
        ]
        plain = [e for e in examples if not e.entities]
        if plain or examples:
            return (plain or examples)[0].text
        return intent.rsplit("/", 1)[-1].replace("_", " ").capitalize()

    def find_article(self, text: str, language: str) -> Hit | None:
        """The article passage that closely matches ``text`` in ``language``, or None."""
        if self.index is None or self.encoder is None or self.article_floor is None:
            return None
        vector = self.encoder.encode([text], kind="query")[0]
        return pick_article(self.index.search(vector, k=1), self.article_floor, language)

    # -- the parts of a turn ------------------------------------------------------------------

    def _language(self, parse: ParseResult, context: DialogueContext, rest: str) -> str:
        # `rest` is the message without its entities ("" for a payload): with no Chinese character
        # and no Latin word in it, it says nothing about the customer's language.
        if context.language and not has_cjk(rest) and not LATIN_WORD.search(rest):
            return context.language
        return parse.language if parse.language in LANGUAGES else DEFAULT_LANGUAGE

    def _response(self, name: str, language: str) -> Variation | None:
        """The knowledge base's response in ``language``, else Baton's built-in one in ``language``,
        else whatever the knowledge base has."""
        variation = self.kb.response(name, language)
        if variation is not None and (
            variation.language == language or _written_in(variation.text) in (language, None)
        ):
            return variation
        builtin = _BUILTIN_RESPONSES.get(name, {}).get(language)
        if builtin is not None:
            return Variation(builtin, language)
        return variation

    def _action(
        self,
        kind: ActionKind,
        text: str,
        turn: _Turn,
        *,
        intent: str,
        source: str,
        context: DialogueContext,
        buttons: Sequence[Mapping[str, Any]] = (),
        person: bool = False,
    ) -> BotAction:
        listed = [{"title": str(b.get("title", "")), "payload": str(b.get("payload", ""))} for b in buttons]
        if person and all(b["payload"] != PERSON_PAYLOAD for b in listed):
            listed.append({"title": _message("person_button", turn.language), "payload": PERSON_PAYLOAD})
        return BotAction(kind, text, turn.language, intent, source, context, listed, turn.parse)

    def _context(self, turn: _Turn, **changes: Any) -> DialogueContext:
        """The next context: this turn's language and slots; no waiting slot or options unless given."""
        base = DialogueContext(language=turn.language, slots=dict(turn.slots))
        return replace(base, **changes)

    def _keep_waiting(self, turn: _Turn, **changes: Any) -> DialogueContext:
        return self._context(
            turn,
            waiting_intent=turn.previous.waiting_intent,
            waiting_slot=turn.previous.waiting_slot,
            **changes,
        )

    def _handoff(self, turn: _Turn) -> BotAction:
        variation = self._response(f"utter_{HANDOFF}", turn.language)
        text = variation.text if variation else _BUILTIN_RESPONSES["utter_human_handoff"][DEFAULT_LANGUAGE]
        return self._action(
            ActionKind.HANDOFF_REQUESTED,
            text,
            turn,
            intent=HANDOFF,
            source=f"utter_{HANDOFF}",
            context=self._context(turn),
        )

    async def _take_up(self, intent: str, turn: _Turn) -> BotAction | None:
        """Answer ``intent`` (or ask for what its answer needs); None if it has no response."""
        name = KnowledgeBase.response_name(intent)
        variation = self._response(name, turn.language)
        if variation is None:
            return None
        fields = placeholders(variation.text)
        if fields is None:  # a broken template: sent, it would show half a placeholder
            return self._cannot_complete(intent, turn)
        needed = [f for f in fields if f in self.slot_names]
        needed += [slot for f, slot in _LOOKUPS.items() if f in fields and slot not in needed]
        missing = [slot for slot in needed if slot not in turn.slots]
        if missing:
            return self._ask(intent, missing[0], turn)
        values = {slot: turn.slots[slot] for slot in needed}
        if "status" in fields:
            looked_up = await self._order_values(intent, turn)
            if isinstance(looked_up, BotAction):
                return looked_up
            values.update(looked_up)
        if set(fields) - values.keys():  # a placeholder nothing can fill: never send a half answer
            return self._cannot_complete(intent, turn)
        context = self._keep_waiting(turn) if intent in _KEEPS_WAITING else self._context(turn)
        return self._action(
            ActionKind.ANSWER,
            fill(variation.text, values),
            turn,
            intent=intent,
            source=name,
            context=context,
            buttons=variation.buttons,
        )

    def _ask(self, intent: str, slot: str, turn: _Turn) -> BotAction:
        ask = self._response(f"utter_ask_{slot}", turn.language)
        if ask is None:
            return self._cannot_complete(intent, turn)
        return self._action(
            ActionKind.ASK_SLOT,
            ask.text,
            turn,
            intent=intent,
            source=f"utter_ask_{slot}",
            context=self._context(turn, waiting_intent=intent, waiting_slot=slot),
            buttons=ask.buttons,
        )

    def _cannot_complete(self, intent: str, turn: _Turn) -> BotAction:
        return self._action(
            ActionKind.FALLBACK,
            _message("cannot_complete", turn.language),
            turn,
            intent=intent,
            source="cannot_complete",
            context=self._context(turn),
            person=True,
        )

    async def _order_values(self, intent: str, turn: _Turn) -> dict[str, str] | BotAction:
        """``order_number`` and ``status`` from the connector, or the action that says why not."""
        number = turn.slots[ORDER_NUMBER]

        def unanswered(message: str, kind: ActionKind, context: DialogueContext) -> BotAction:
            text = fill(_message(message, turn.language), {ORDER_NUMBER: number})
            return self._action(kind, text, turn, intent=intent, source=message, context=context, person=True)

        if self.connector is None:
            # Never guess a status: say so, and offer the people who can look it up.
            return unanswered("order_lookup_unavailable", ActionKind.FALLBACK, self._context(turn))
        try:
            order = await self.connector.lookup(number)
        except OrderLookupError:
            return unanswered("order_lookup_failed", ActionKind.FALLBACK, self._context(turn))
        if order is None:
            # Forget the wrong number and wait for a corrected one.
            slots = {k: v for k, v in turn.slots.items() if k != ORDER_NUMBER}
            context = self._context(turn, slots=slots, waiting_intent=intent, waiting_slot=ORDER_NUMBER)
            return unanswered("order_not_found", ActionKind.ASK_SLOT, context)
        return {ORDER_NUMBER: order.number, "status": self._describe(order, turn.language)}

    @staticmethod
    def _describe(order: Order, language: str) -> str:
        return fill(
            _message("order_status_line", language),
            {"status": order.status_in(language), "time": order.updated_at.strftime("%Y-%m-%d %H:%M")},
        )

    def _not_understood(self, turn: _Turn) -> BotAction:
        """Article, "did you mean", or a polite fallback with the way to a person."""
        parse = turn.parse
        top = parse.ranking[0] if parse.ranking else None
        out_of_scope = parse.intent.name == OUT_OF_SCOPE or (
            # The novelty check made a sure out_of_scope guess fall back: it only confirms it.
            parse.intent.name == FALLBACK
            and top is not None
            and top.name == OUT_OF_SCOPE
            and self.threshold is not None
            and top.confidence >= self.threshold
        )
        article = self.find_article(parse.text, turn.language)
        if article is not None:
            variation = self._response("utter_article", turn.language)
            values = {"title": article.entry.title or "", "passage": article.entry.text}
            template = variation.text if variation else "{title}\n{passage}"
            return self._action(
                ActionKind.ARTICLE,
                fill(template, values),
                turn,
                intent=OUT_OF_SCOPE if out_of_scope else FALLBACK,
                source=f"article:{article.entry.article_id}",
                context=self._keep_waiting(turn),
            )
        options = None if out_of_scope else self.did_you_mean(parse, turn.previous)
        if options is not None:
            return self._clarify(options, turn)
        name = "utter_out_of_scope" if out_of_scope else "utter_default"
        variation = self._response(name, turn.language)
        text = variation.text if variation else _BUILTIN_RESPONSES[name][DEFAULT_LANGUAGE]
        return self._action(
            ActionKind.FALLBACK,
            text,
            turn,
            intent=OUT_OF_SCOPE if out_of_scope else FALLBACK,
            source=name,
            context=self._keep_waiting(turn),
            buttons=variation.buttons if variation else (),
            person=True,
        )

    def _clarify(self, options: tuple[str, str], turn: _Turn) -> BotAction:
        titles = [self.option_title(intent, turn.language) for intent in options]
        quoted = [fill(_message("quoted", turn.language), {"text": t}) for t in titles]
        variation = self._response("utter_did_you_mean", turn.language)
        template = variation.text if variation else _BUILTIN_RESPONSES["utter_did_you_mean"][DEFAULT_LANGUAGE]
        return self._action(
            ActionKind.CLARIFY,
            fill(template, {"option_a": quoted[0], "option_b": quoted[1]}),
            turn,
            intent=FALLBACK,
            source="utter_did_you_mean",
            context=self._context(turn, options=options),
            buttons=[{"title": t, "payload": f"/{i}"} for t, i in zip(titles, options, strict=True)],
        )
