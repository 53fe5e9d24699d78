"""The turn pipeline: one customer message from any channel, stored, understood and answered.

This is the one module that knows the store, the bot and the handoff together (DESIGN.md:
the pipeline lives in ``api/``). A turn has two halves, so that a channel can acknowledge a
message as soon as it is safe:

1. `TurnPipeline.accept`: check the text, find the customer, apply the rate limit, and store
   the message (once per client message id). After this returns the message cannot be lost.
   A rating button's payload (``/rate_4``) after a person resolved the conversation is stored
   in that conversation and recorded as its rating, instead of opening a new conversation.
2. `TurnPipeline.reply`: understand the message (in the NLU worker thread) and score its
   sentiment. If the bot holds the conversation, decide, let the escalation policy read the
   turn's signals, and store the bot's reply, which the store refuses if a person took the
   conversation meanwhile. An escalation replaces the bot's answer by a word on why a person
   is coming, then hands the conversation to the queue (`handoff.desk.HandoffDesk.escalate`).
   In ``queued`` and ``assigned`` the bot stays silent, but the message is still understood,
   so the agent sees its intent and sentiment and gets fresh suggestions.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from api.channels.base import InboundMessage
from api.errors import ApiError
from api.nlu_worker import NLUWorker
from api.ratelimit import RateLimiter
from bot.dialogue import ActionKind, BotAction, DialogueContext, DialoguePolicy
from bot.nlu.language import detect_language
from bot.nlu.types import ParseResult
from conversations.model import Conversation, Customer, Turn
from conversations.states import State
from conversations.store import BotSilenced, ConversationStore
from handoff.desk import HandoffDesk
from handoff.notices import escalation_text, parse_rating
from handoff.sentiment import Sentiment, SentimentScorer
from handoff.signal_store import SignalStore
from handoff.signals import SENSITIVE_TOPIC, Escalation, EscalationPolicy, TurnFacts


@dataclass(frozen=True)
class Accepted:
    """A customer's message, stored.

    Attributes:
        customer: who sent it (after identity linking).
        conversation: the conversation it went into, as it was when stored.
        turn: the stored turn (the original one for a repeat).
        duplicate: the client message id was seen before: nothing was stored, and the bot
            does not answer again.
        rating: the score when the message rated the conversation a person just resolved.
    """

    customer: Customer
    conversation: Conversation
    turn: Turn
    duplicate: bool
    rating: int | None = None

    @property
    def bot_answers(self) -> bool:
        """True when `TurnPipeline.reply` will let the bot answer."""
        return not self.duplicate and self.rating is None and self.conversation.state == State.BOT


class TurnPipeline:
    """Stores and answers customers' messages, and hands them to a person when needed.

    Args:
        store: the conversation store.
        policy: the bot's dialogue policy (knowledge base, NLU, index, order connector).
        nlu: the worker that runs the policy's NLU off the event loop.
        limiter: the per-customer rate limit.
        sentiment: scores each customer message's negativity and anger.
        escalation: reads each turn's signals and decides when a person is needed.
        signals: where the escalation policy's per-conversation state is kept.
        desk: hands conversations to the queue and records ratings.
        max_chars: the longest message accepted.
    """

    def __init__(
        self,
        store: ConversationStore,
        policy: DialoguePolicy,
        nlu: NLUWorker,
        limiter: RateLimiter,
        sentiment: SentimentScorer,
        escalation: EscalationPolicy,
        signals: SignalStore,
        desk: HandoffDesk,
        max_chars: int = 4000,
    ) -> None:
        self.store = store
        self.policy = policy
        self.nlu = nlu
        self.limiter = limiter
        self.sentiment = sentiment
        self.escalation = escalation
        self.signals = signals
        self.desk = desk
        self.max_chars = max_chars
        # Called with (conversation id, seq, nlu) once a message to an agent is understood, so
        # the agent gets its intent, sentiment and fresh suggestions (`api.service` sets it).
        self.on_understood: Callable[[str, int, dict[str, Any]], Awaitable[None]] | None = None
        # One turn at a time per conversation in this process, so that two quick messages
        # read and save the dialogue context and the escalation signals in order.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def check_text(self, text: object) -> str:
        """``text`` if it is an acceptable message.

        Raises:
            ApiError: 400 ``empty`` (nothing but spaces), 413 ``too_long``, 400 ``bad_request``.
        """
        if not isinstance(text, str):
            raise ApiError(400, "bad_request", "the message text must be a string")
        if not text.strip():
            raise ApiError(400, "empty", "the message is empty: type something to send")
        if len(text) > self.max_chars:
            raise ApiError(
                413,
                "too_long",
                f"the message has {len(text)} characters; the limit is {self.max_chars}. "
                "Please shorten it or send it in parts.",
            )
        return text

    async def accept(self, message: InboundMessage) -> Accepted:
        """Store the customer's message; nothing is stored if it is refused.

        Raises:
            ApiError: the text is refused (`check_text`), or 429 ``rate_limited``.
        """
        text = self.check_text(message.text)
        customer = await self.store.resolve_customer(message.channel, message.external_id)
        wait = await self.limiter.hit(customer.id)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                f"too many messages: at most {self.limiter.limit} every {self.limiter.window:g} s. "
                f"Try again in {wait:.0f} s.",
                retry_after=wait,
            )
        score = parse_rating(text)
        rated = await self._rated_conversation(customer.id) if score is not None else None
        conversation = rated or await self.store.current_conversation(customer.id, message.channel)
        language = detect_language(text, default=conversation.language or "en").language
        if rated is not None:
            language = rated.language or language
        turn, stored = await self.store.append_customer_turn(
            conversation.id, text, message.channel, language, message.client_message_id
        )
        if stored and turn.seq == 1:
            await self.desk.metrics.conversation_started(message.channel, language)
        return Accepted(customer, conversation, turn, duplicate=not stored, rating=score if rated else None)

    async def _rated_conversation(self, customer_id: str) -> Conversation | None:
        """The conversation a rating button refers to: the latest, resolved by a person, not yet rated."""
        latest = await self.store.latest_conversation(customer_id)
        if latest is None or latest.state != State.RESOLVED or not latest.handoff_count:
            return None
        if await self.desk.records.rating(latest.id) is not None:
            return None
        return latest

    async def reply(self, accepted: Accepted) -> list[Turn]:
        """The bot's turns for an accepted message (stored); empty when the bot stays silent."""
        if accepted.duplicate:
            return []
        if accepted.rating is not None:
            thanks = await self.desk.rate(accepted.conversation, accepted.rating)
            return [thanks] if thanks is not None else []
        conversation_id = accepted.conversation.id
        lock = self._locks.setdefault(conversation_id, asyncio.Lock())
        async with lock:
            if accepted.bot_answers:
                return await self._bot_turn(conversation_id, accepted.turn)
            if accepted.conversation.is_open:  # an agent has it or will: understand it for them
                await self.desk.recover(accepted.conversation)
                await self._understand(conversation_id, accepted.turn)
            return []

    async def _parse(self, message: Turn, context: DialogueContext) -> tuple[ParseResult, Sentiment, float]:
        started = time.perf_counter()
        parse = self.policy.payload_parse(message.text, context.language or message.language or "en")
        if parse is None:
            parse = await self.nlu.parse(message.text)
        sentiment = self.sentiment.score(message.text, parse.language)
        return parse, sentiment, (time.perf_counter() - started) * 1000

    async def _understand(self, conversation_id: str, message: Turn) -> None:
        """NLU and sentiment for a message the bot does not answer, kept with the turn."""
        parse, sentiment, nlu_ms = await self._parse(message, DialogueContext())
        nlu = {**parse.to_dict(), "sentiment": sentiment.to_dict()}
        await self.store.annotate_turn(
            conversation_id, message.seq, nlu=nlu, timings={"nlu_ms": round(nlu_ms, 2)}
        )
        if self.on_understood is not None:
            await self.on_understood(conversation_id, message.seq, nlu)

    async def _bot_turn(self, conversation_id: str, message: Turn) -> list[Turn]:
        started = time.perf_counter()
        context = DialogueContext.from_dict(await self.store.bot_context(conversation_id) or {})
        parse, sentiment, nlu_ms = await self._parse(message, context)
        action = await self.policy.decide(parse, context)
        escalation = await self._signals(conversation_id, message, parse, sentiment, action)
        nlu = {**parse.to_dict(), "sentiment": sentiment.to_dict()}
        if escalation is not None:
            nlu["escalation"] = {"reasons": list(escalation.reasons), "severity": escalation.severity}
        await self.store.annotate_turn(
            conversation_id, message.seq, nlu=nlu, timings={"nlu_ms": round(nlu_ms, 2)}
        )
        text, buttons = action.text, action.buttons
        if escalation is not None and not _bot_words_fit(action, escalation):
            text, buttons = escalation_text(escalation.reason, action.language), []
        try:
            reply = await self.store.append_bot_turn(
                conversation_id,
                text,
                language=action.language,
                nlu=_decision(action),
                timings={"reply_ms": round((time.perf_counter() - started) * 1000, 2)},
                buttons=buttons,
                reply_to=message.seq,
            )
        except BotSilenced:  # a person took the conversation while the bot was thinking
            return []
        await self.store.save_bot_context(conversation_id, action.context.to_dict())
        if escalation is not None:
            await self.desk.escalate(
                conversation_id,
                escalation,
                intent=action.intent,
                language=action.language,
                channel=message.channel,
            )
        return [reply]

    async def _signals(
        self, conversation_id: str, message: Turn, parse: ParseResult, sentiment: Sentiment, action: BotAction
    ) -> Escalation | None:
        """Let the escalation policy read this turn; None when the bot keeps the conversation."""
        facts = TurnFacts(
            text=message.text,
            language=action.language,
            intent=parse.intent.name,
            entities=tuple((e.entity, e.value) for e in parse.entities),
            bot_action=action.kind.value,
            negative=sentiment.negative,
            anger=sentiment.anger,
            confidence=parse.intent.confidence,
            best_guess=parse.ranking[0].name if parse.ranking else None,
        )
        state = await self.signals.load(conversation_id)
        state, escalation = self.escalation.observe(state, facts)
        await self.signals.save(conversation_id, state)
        return escalation


def _bot_words_fit(action: BotAction, escalation: Escalation) -> bool:
    """True when the bot's own answer already says a person is coming (a request, a complaint)."""
    if action.kind == ActionKind.HANDOFF_REQUESTED:
        return True
    return escalation.reason == SENSITIVE_TOPIC and action.kind == ActionKind.ANSWER


def _decision(action: BotAction) -> dict[str, str]:
    """What the bot decided, kept with its turn (for agents and metrics)."""
    return {"action": action.kind.value, "intent": action.intent, "source": action.source}
