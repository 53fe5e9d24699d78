"""The turn pipeline: one customer message from any channel, stored, understood and answered.

This is the one module that knows the store, the bot and the handoff together (the pipeline
lives in ``api/``, see docs/architecture.md). A turn has two halves, so that a channel can
acknowledge a message as soon as it is safe:

1. `TurnPipeline.accept`: check the text, find the customer, apply the rate limit, and store
   the message (once per client message id). Storing it also makes it an entry of the inbox
   stream, pending with this replica (`conversations.streams`): after this returns the message
   cannot be lost, and it will be handled even if this process dies now.
2. `TurnPipeline.handle` (what `reply` runs for an accepted message, and the inbox worker for a
   message whose replica died): handle the conversation's customer turns in order, each once.
   For each, read the conversation's ``handled`` mark, then, by the conversation's state:
   ``bot``: understand (in the NLU worker thread), score the sentiment, decide, let the
   escalation policy read the turn's signals, and commit it all in one step (the bot's reply,
   its context, the signals, an escalation's handoff, the mark: `handoff.queue.TurnCommit`);
   ``queued`` / ``assigned``: understand it for the agent (intent, sentiment, fresh
   suggestions), the bot stays silent; ``resolved``: a rating of the person who helped, or
   nothing. The commit happens only if the mark still reads what it read: when two handlers
   race (a resend on another replica, a reclaimed entry), one commits and the other's work is
   dropped, so each message's effects happen exactly once.
"""

from __future__ import annotations

import asyncio
import logging
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
from conversations import failpoints
from conversations.model import Conversation, Customer, Turn
from conversations.states import State
from conversations.store import ConversationStore, draft_turn
from conversations.streams import Inbox
from handoff.desk import HandoffDesk
from handoff.metrics import started_counts
from handoff.notices import escalation_text, parse_rating
from handoff.queue import TurnCommit
from handoff.sentiment import Sentiment, SentimentScorer
from handoff.signals import SENSITIVE_TOPIC, Escalation, EscalationPolicy, SignalState, TurnFacts

log = logging.getLogger(__name__)

# Called with (conversation id, seq, nlu) once a message to an agent is understood.
Understood = Callable[[str, int, dict[str, Any]], Awaitable[None]]


MAX_ROUNDS = 1000  # a handle call gives up (and the inbox retries later) after this many rounds
PAGE = 50  # turns read at once while looking for the next customer turn to handle


@dataclass(frozen=True)
class Accepted:
    """A customer's message, stored.

    Attributes:
        customer: who sent it (after identity linking).
        conversation: the conversation it went into, as it was when stored.
        turn: the stored turn (the original one for a repeat).
        duplicate: the client message id was seen before: nothing was stored.
        pending: the message is not handled yet (always for a new one; for a repeat, when the
            replica that stored it died before handling it): `TurnPipeline.reply` handles it.
        entry_id: its inbox entry, when this call stored it.
    """

    customer: Customer
    conversation: Conversation
    turn: Turn
    duplicate: bool
    pending: bool = True
    entry_id: str | None = None

    @property
    def bot_answers(self) -> bool:
        """True when the bot will likely answer (the conversation was with the bot when stored)."""
        return self.pending and self.conversation.state == State.BOT


class TurnPipeline:
    """Stores and answers customers' messages, and hands them to a person when needed.

    Args:
        store: the conversation store.
        policy: the bot's dialogue policy (knowledge base, NLU, index, order connector).
        nlu: the worker that runs the policy's NLU off the event loop.
        limiter: the per-customer rate limit.
        sentiment: scores each customer message's negativity and anger.
        escalation: reads each turn's signals and decides when a person is needed.
        desk: hands conversations to the queue and records ratings; its queue commits turns.
        inbox: this replica's consumer of the inbox stream.
        understood: called with (conversation id, seq, nlu) once a message to an agent is
            understood, so the agent gets its intent, sentiment and fresh suggestions.
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
        desk: HandoffDesk,
        inbox: Inbox,
        understood: Understood | None = None,
        max_chars: int = 4000,
    ) -> None:
        self.store = store
        self.policy = policy
        self.nlu = nlu
        self.limiter = limiter
        self.sentiment = sentiment
        self.escalation = escalation
        self.desk = desk
        self.queue = desk.queue
        self.signals = desk.queue.signals
        self.inbox = inbox
        self.understood = understood
        self.max_chars = max_chars
        # One handler at a time per conversation in this process: two quick messages are
        # handled in order without losing work to the handled mark's compare-and-set.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._replying: set[asyncio.Task[list[Turn]]] = set()  # strong references: see reply_soon

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
        """Store the customer's message, pending in this replica's inbox; nothing is stored if it is refused.

        A rating button's payload (``/rate_4``) after a person resolved the conversation is
        stored in that conversation, to be recorded as its rating, instead of opening a new one.

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
        rated = await self._rated_conversation(customer.id) if parse_rating(text) is not None else None
        conversation = rated or await self.store.current_conversation(customer.id, message.channel)
        language = detect_language(text, default=conversation.language or "en").language
        if rated is not None:
            language = rated.language or language
        stored = await self.store.append_customer_turn(
            conversation.id,
            text,
            message.channel,
            language,
            message.client_message_id,
            handler=self.inbox.consumer,
        )
        failpoints.reach("stored")
        return Accepted(
            customer, conversation, stored.turn, not stored.stored, stored.pending, stored.entry_id
        )

    async def _rated_conversation(self, customer_id: str) -> Conversation | None:
        """The conversation a rating button refers to: the latest, resolved by a person, not yet rated."""
        latest = await self.store.latest_conversation(customer_id)
        if latest is None or latest.state != State.RESOLVED or not latest.handoff_count:
            return None
        if await self.desk.records.rating(latest.id) is not None:
            return None
        return latest

    async def reply(self, accepted: Accepted) -> list[Turn]:
        """Handle an accepted message now; the bot's turns for it (stored), empty when it stays silent.

        A repeat of a message already handled does nothing. The message's inbox entry is
        acknowledged once it is handled.
        """
        if not accepted.pending:
            return []
        turns = await self.handle(accepted.conversation.id, accepted.turn.seq)
        failpoints.reach("committed")
        if accepted.entry_id is not None:
            await self.inbox.ack(accepted.entry_id)
        return turns

    def reply_soon(self, accepted: Accepted) -> asyncio.Task[list[Turn]]:
        """`reply` in a task of its own, started now, which the caller's fate cannot stop.

        A channel acknowledges the message and then talks to a connection that may close at any
        moment: the handling must not hang on that. Await the task through ``asyncio.shield``.
        A failure leaves the message pending; the inbox worker handles it later.
        """
        task = asyncio.create_task(self.reply(accepted), name=f"reply-{accepted.turn.id}")
        self._replying.add(task)  # the event loop keeps only weak references to tasks
        task.add_done_callback(self._replying.discard)
        task.add_done_callback(_log_failure)
        return task

    async def handle(self, conversation_id: str, seq: int) -> list[Turn]:
        """Handle the conversation's customer turns up to ``seq``, in order, each once.

        Returns:
            The bot's turns in answer to ``seq`` if this call handled it (empty when another
            handler did, or when the bot stays silent).
        """
        lock = self._locks.setdefault(conversation_id, asyncio.Lock())
        async with lock:
            for _ in range(MAX_ROUNDS):
                conversation = await self.store.get_conversation(conversation_id)
                if conversation is None or conversation.handled >= seq:
                    return []
                message = await self._next_customer_turn(conversation)
                if message is None:  # the mark is ahead of the turns: nothing of ours to do
                    log.error(
                        "conversation %s: no customer turn after %d", conversation_id, conversation.handled
                    )
                    return []
                turns = await self._handle_one(conversation, message)
                if turns is not None and message.seq == seq:
                    return turns
        raise RuntimeError(f"conversation {conversation_id}: turn {seq} still not handled")

    async def _next_customer_turn(self, conversation: Conversation) -> Turn | None:
        after = conversation.handled
        while True:
            page = await self.store.turns(conversation.id, after_seq=after, limit=PAGE)
            for turn in page:
                if turn.sender == "customer":
                    return turn
            if len(page) < PAGE:
                return None
            after = page[-1].seq

    async def _handle_one(self, conversation: Conversation, message: Turn) -> list[Turn] | None:
        """Handle one customer turn; None when its commit lost a race (the caller reads again)."""
        if conversation.state == State.BOT:
            return await self._bot_turn(conversation, message)
        replies: list[Turn] = []
        if conversation.is_open:  # an agent has it or will: understand it for them
            await self._understand(conversation.id, message)
        elif (score := parse_rating(message.text)) is not None:
            thanks = await self.desk.rate(conversation, score)
            replies = [thanks] if thanks is not None else []
        if not await self.store.mark_handled(conversation.id, conversation.handled, message.seq):
            return None
        return replies

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
        if self.understood is not None:
            await self.understood(conversation_id, message.seq, nlu)

    async def _bot_turn(self, conversation: Conversation, message: Turn) -> list[Turn] | None:
        started = time.perf_counter()
        conversation_id = conversation.id
        context = DialogueContext.from_dict(await self.store.bot_context(conversation_id) or {})
        parse, sentiment, nlu_ms = await self._parse(message, context)
        action = await self.policy.decide(parse, context)
        signals, escalation = self._signals(
            await self.signals.load(conversation_id), message, parse, sentiment, action
        )
        nlu = {**parse.to_dict(), "sentiment": sentiment.to_dict()}
        if escalation is not None:
            nlu["escalation"] = {"reasons": list(escalation.reasons), "severity": escalation.severity}
        await self.store.annotate_turn(
            conversation_id, message.seq, nlu=nlu, timings={"nlu_ms": round(nlu_ms, 2)}
        )
        text, buttons = action.text, action.buttons
        request = None
        if escalation is not None:
            if not _bot_words_fit(action, escalation):
                text, buttons = escalation_text(escalation.reason, action.language), []
            request = await self.desk.request(
                conversation,
                escalation,
                intent=action.intent,
                language=action.language,
                channel=message.channel,
            )
        reply = draft_turn(
            conversation_id,
            "bot",
            text,
            conversation.channel,
            action.language,
            nlu=_decision(action),
            timings={"reply_ms": round((time.perf_counter() - started) * 1000, 2)},
            buttons=buttons,
            reply_to=message.seq,
        )
        failpoints.reach("understood")
        committed = await self.queue.commit_turn(
            TurnCommit(
                conversation_id,
                seq=message.seq,
                handled=conversation.handled,
                reply=reply,
                context=action.context.to_dict(),
                signals=signals,
                escalation=request,
                reason=escalation.reason if escalation is not None else "",
                first_handoff=conversation.handoff_count == 0,
                # Counted with the first message handled, so a crash cannot count it twice or never.
                counts=started_counts(message.channel, message.language) if conversation.handled == 0 else {},
            )
        )
        if committed.outcome == "ok":
            return [committed.reply] if committed.reply is not None else []
        if committed.outcome == "missing":
            return []
        return None  # stale: another handler did it; refused: a person has it now (read again)

    def _signals(
        self, state: SignalState, message: Turn, parse: ParseResult, sentiment: Sentiment, action: BotAction
    ) -> tuple[SignalState, Escalation | None]:
        """Let the escalation policy read this turn; the escalation is None when the bot keeps it."""
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
        return self.escalation.observe(state, facts)


def _log_failure(task: asyncio.Task[list[Turn]]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("handling a message failed; it stays pending for the inbox worker", exc_info=error)


def _bot_words_fit(action: BotAction, escalation: Escalation) -> bool:
    """True when the bot's own answer already says a person is coming (a request, a complaint)."""
    if action.kind == ActionKind.HANDOFF_REQUESTED:
        return True
    return escalation.reason == SENSITIVE_TOPIC and action.kind == ActionKind.ANSWER


def _decision(action: BotAction) -> dict[str, str]:
    """What the bot decided, kept with its turn (for agents and metrics)."""
    return {"action": action.kind.value, "intent": action.intent, "source": action.source}
