"""The turn pipeline: one customer message from any channel, stored, understood and answered.

This is the one module that knows the store, the bot and (soon) the handoff together
(DESIGN.md: the pipeline lives in ``api/``). A turn has two halves, so that a channel can
acknowledge a message as soon as it is safe:

1. `TurnPipeline.accept`: check the text, find the customer, apply the rate limit, and store
   the message (once per client message id). After this returns the message cannot be lost.
2. `TurnPipeline.reply`: if the bot holds the conversation, understand the message (in the
   NLU worker thread), decide, and store the bot's reply, which the store refuses if a
   person took the conversation meanwhile. A request for a person moves it to ``queued``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from dataclasses import dataclass

from api.channels.base import InboundMessage
from api.errors import ApiError
from api.nlu_worker import NLUWorker
from api.ratelimit import RateLimiter
from bot.dialogue import ActionKind, BotAction, DialogueContext, DialoguePolicy
from bot.nlu.language import detect_language
from conversations.model import Conversation, Customer, Turn
from conversations.states import InvalidTransition, State
from conversations.store import BotSilenced, ConversationStore

EXPLICIT_REQUEST = "explicit_request"  # DESIGN.md's reason code for "I want a person"


@dataclass(frozen=True)
class Accepted:
    """A customer's message, stored.

    Attributes:
        customer: who sent it (after identity linking).
        conversation: the conversation it went into, as it was when stored.
        turn: the stored turn (the original one for a repeat).
        duplicate: the client message id was seen before: nothing was stored, and the bot
            does not answer again.
    """

    customer: Customer
    conversation: Conversation
    turn: Turn
    duplicate: bool

    @property
    def bot_answers(self) -> bool:
        """True when `TurnPipeline.reply` will let the bot answer."""
        return not self.duplicate and self.conversation.state == State.BOT


class TurnPipeline:
    """Stores and answers customers' messages.

    Args:
        store: the conversation store.
        policy: the bot's dialogue policy (knowledge base, NLU, index, order connector).
        nlu: the worker that runs the policy's NLU off the event loop.
        limiter: the per-customer rate limit.
        max_chars: the longest message accepted.
    """

    def __init__(
        self,
        store: ConversationStore,
        policy: DialoguePolicy,
        nlu: NLUWorker,
        limiter: RateLimiter,
        max_chars: int = 4000,
    ) -> None:
        self.store = store
        self.policy = policy
        self.nlu = nlu
        self.limiter = limiter
        self.max_chars = max_chars
        # One bot turn at a time per conversation in this process, so that two quick messages
        # read and save the dialogue context in order.
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
        conversation = await self.store.current_conversation(customer.id, message.channel)
        language = detect_language(text, default=conversation.language or "en").language
        turn, stored = await self.store.append_customer_turn(
            conversation.id, text, message.channel, language, message.client_message_id
        )
        return Accepted(customer, conversation, turn, duplicate=not stored)

    async def reply(self, accepted: Accepted) -> list[Turn]:
        """The bot's turns for an accepted message (stored); empty when the bot stays silent."""
        if not accepted.bot_answers:
            return []
        conversation_id = accepted.conversation.id
        lock = self._locks.setdefault(conversation_id, asyncio.Lock())
        async with lock:
            return await self._bot_turn(conversation_id, accepted.turn)

    async def _bot_turn(self, conversation_id: str, message: Turn) -> list[Turn]:
        started = time.perf_counter()
        context = DialogueContext.from_dict(await self.store.bot_context(conversation_id) or {})
        parse = self.policy.payload_parse(message.text, context.language or message.language or "en")
        if parse is None:
            parse = await self.nlu.parse(message.text)
        nlu_ms = (time.perf_counter() - started) * 1000
        action = await self.policy.decide(parse, context)
        await self.store.annotate_turn(
            conversation_id, message.seq, nlu=parse.to_dict(), timings={"nlu_ms": round(nlu_ms, 2)}
        )
        try:
            reply = await self.store.append_bot_turn(
                conversation_id,
                action.text,
                language=action.language,
                nlu=_decision(action),
                timings={"reply_ms": round((time.perf_counter() - started) * 1000, 2)},
                buttons=action.buttons,
                reply_to=message.seq,
            )
        except BotSilenced:  # a person took the conversation while the bot was thinking
            return []
        await self.store.save_bot_context(conversation_id, action.context.to_dict())
        if action.kind == ActionKind.HANDOFF_REQUESTED:
            await self._queue(conversation_id, EXPLICIT_REQUEST)
        return [reply]

    async def _queue(self, conversation_id: str, reason: str) -> None:
        # Another replica may have escalated it first: one handoff, not two.
        with contextlib.suppress(InvalidTransition):
            await self.store.transition(conversation_id, State.QUEUED, expected_from=State.BOT, reason=reason)


def _decision(action: BotAction) -> dict[str, str]:
    """What the bot decided, kept with its turn (for agents and metrics)."""
    return {"action": action.kind.value, "intent": action.intent, "source": action.source}
