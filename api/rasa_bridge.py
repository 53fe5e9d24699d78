"""The Rasa bridge: Baton's knowledge answers and human handoff for an existing Rasa assistant.

A team that already runs a Rasa assistant keeps it, and adds two custom actions
(``bot/rasa/actions/actions.py``) that call this API from Rasa's action server, server to
server, with ``Authorization: Bearer <BATON_RASA_ACTIONS_TOKEN>`` (the API answers 503 while
that setting is empty):

- ``POST /api/v1/rasa/handoff`` copies the Rasa conversation into Baton (the customer's and
  the bot's messages, once each however often the action is retried) and hands it to Baton's
  queue through `handoff.desk.HandoffDesk.escalate`, exactly as Baton's own bot would. The
  answer carries a web-chat token, so the customer's widget can carry on with the person on
  Baton's web chat (Rasa's handoff pattern: a custom message with ``handoff_host``).
- ``POST /api/v1/rasa/answer`` answers a knowledge question the way Baton's bot does (an FAQ
  answer or an article passage, `bot.dialogue.DialoguePolicy`), or says it has nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, ConfigDict, Field

from api.auth import make_token
from api.channels.app import bearer
from api.errors import ApiError, unauthorized
from api.rasa_resume import remember_sender
from api.service import Service
from bot.dialogue import ActionKind, BotAction, DialogueContext
from bot.nlu.language import detect_language
from bot.nlu.types import ParseResult
from conversations.model import Conversation, Turn
from conversations.states import State
from conversations.store import BotSilenced
from handoff.handoffs import Handoff
from handoff.signals import EXPLICIT_REQUEST, REASONS, SEVERITY, Escalation

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/rasa", tags=["rasa"])

MAX_SENDER_CHARS = 190  # "rasa-" + the sender id must fit a visitor token's 200-character subject
MAX_EVENTS = 1000  # Rasa events per handoff; the 64 KiB body limit is usually reached first
MAX_EVENT_CHARS = 4000  # the longest message text in one event
VISITOR_PREFIX = "rasa-"
IMPORTED_KEPT_SECONDS = 90 * 86400  # how long a Rasa conversation's imported events are remembered
NOTICE_LOOKBACK = 20  # the desk's notice is among the conversation's last few turns
NOTICE_WAIT_SECONDS = 3.0  # how long the answer waits for an assigner's first notice
NOTICE_POLL_SECONDS = 0.05
SOURCE = "rasa"  # marks imported turns' nlu, so agents know Rasa understood them


# -- request and response bodies -------------------------------------------------------------


class RasaIntent(BaseModel):
    """``parse_data.intent`` of a Rasa user event."""

    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(None, max_length=200)
    confidence: float | None = Field(None, ge=0, le=1)


class RasaEntity(BaseModel):
    """One of ``parse_data.entities`` (Rasa's extractor details are ignored)."""

    model_config = ConfigDict(extra="ignore")

    entity: str = Field(min_length=1, max_length=100)
    value: str | int | float | bool = Field(union_mode="left_to_right")
    start: int | None = Field(None, ge=0)
    end: int | None = Field(None, ge=0)


class RasaParseData(BaseModel):
    """What Rasa's NLU understood of a user message; Baton keeps the intent and entities."""

    model_config = ConfigDict(extra="ignore")

    intent: RasaIntent | None = None
    entities: list[RasaEntity] = Field(default_factory=list, max_length=50)


class RasaEvent(BaseModel):
    """A Rasa tracker event, as Rasa gives it. Only ``user`` and ``bot`` events with text are used."""

    model_config = ConfigDict(extra="ignore")

    event: str = Field(min_length=1, max_length=64, description="user, bot, action, slot, ...")
    text: str | None = Field(None, max_length=MAX_EVENT_CHARS)
    timestamp: float | None = Field(None, ge=0, description="Unix seconds, as Rasa stamps events")
    parse_data: RasaParseData | None = None


class CustomerRef(BaseModel):
    """The Baton identity of the Rasa user, when it is not the default web visitor ``rasa-<sender_id>``."""

    model_config = ConfigDict(extra="forbid")

    channel: Literal["web", "app", "wechat"]
    external_id: str = Field(min_length=1, max_length=200, description="visitor id, app user id or openid")


class HandoffBody(BaseModel):
    """``POST /api/v1/rasa/handoff``."""

    model_config = ConfigDict(extra="forbid")

    sender_id: str = Field(
        min_length=1,
        max_length=MAX_SENDER_CHARS,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Rasa's conversation id (tracker.sender_id)",
    )
    reason: str = Field(EXPLICIT_REQUEST, max_length=64, description=f"one of {', '.join(REASONS)}")
    events: list[RasaEvent] = Field(
        default_factory=list, max_length=MAX_EVENTS, description="tracker.events, oldest first"
    )
    language: Literal["zh", "en"] | None = Field(
        None, description="the conversation's language; empty: guessed from the customer's messages"
    )
    customer: CustomerRef | None = Field(
        None, description="the customer's Baton identity; empty: the web visitor rasa-<sender_id>"
    )


class ImportedCounts(BaseModel):
    """Turns this call stored (0 and 0 on a retry)."""

    customer: int
    bot: int


class HandoffAnswer(BaseModel):
    """The handoff, and how the customer's chat widget reaches it on Baton's web chat."""

    conversation_id: str
    handoff_id: str
    state: str = Field(description="the conversation's state: queued, or assigned once a person has it")
    queued: bool = Field(description="true when this call queued it; false when it already was")
    reasons: list[str]
    language: str
    notice: str | None = Field(description="Baton's latest word to the customer about where they stand")
    imported: ImportedCounts
    visitor_id: str | None = Field(description="the web visitor (null for a customer given in the request)")
    token: str | None = Field(description="the visitor's token for /ws/web?token=...&conversation=...")
    expires_in: int | None = Field(description="seconds the token stays valid")


class AnswerBody(BaseModel):
    """``POST /api/v1/rasa/answer``."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="the customer's message (1 to BATON_MAX_MESSAGE_CHARS characters)")
    language: Literal["zh", "en"] | None = Field(
        None, description="the conversation's language, used when the text itself shows none"
    )


class KnowledgeAnswer(BaseModel):
    """Baton's answer, or ``answer: null`` when nothing in its knowledge base is close enough."""

    answer: str | None
    source: Literal["faq", "article"] | None
    intent: str = Field(description="Baton's NLU intent (nlu_fallback or out_of_scope when not understood)")
    article_id: str | None
    confidence: float = Field(description="Baton's NLU confidence in intent")
    language: str


# -- authentication ---------------------------------------------------------------------------


def _service(request: Request) -> Service:
    return request.app.state.service


async def rasa_caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Service:
    """The service, once the request carries the Rasa actions token (503 while the API is off, else 401)."""
    service = _service(request)
    secret = service.settings.rasa_actions_token
    expected = secret.get_secret_value().encode() if secret is not None else b""
    if not expected:
        raise ApiError(503, "rasa_disabled", "the Rasa API is off: set BATON_RASA_ACTIONS_TOKEN")
    given = bearer(authorization)
    if given is None or not hmac.compare_digest(given.encode(), expected):
        raise unauthorized("the Rasa API needs Authorization: Bearer <BATON_RASA_ACTIONS_TOKEN>")
    return service


Caller = Annotated[Service, Depends(rasa_caller)]


# -- the transcript ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One message of the Rasa transcript, with the key that makes importing it idempotent."""

    sender: Literal["customer", "bot"]
    text: str
    key: str
    parse: RasaParseData | None = None

    @property
    def client_message_id(self) -> str:
        """The customer turn's message id, so the store keeps it once per conversation."""
        return f"{SOURCE}-{self.key}"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def transcript(sender_id: str, events: Sequence[RasaEvent]) -> list[Line]:
    """The user and bot messages of ``events``, in order, each with a stable key.

    The key is the sender id, the event's kind and timestamp, and its index among the events of
    that kind with the same timestamp (so two messages in one second differ). It stays the same
    when Rasa sends a longer tracker or the action server trims its start, which a position in
    the list would not. An event with no timestamp falls back to its position.
    """
    lines: list[Line] = []
    seen: Counter[tuple[str, str]] = Counter()
    for position, event in enumerate(events):
        if event.event not in ("user", "bot") or not (event.text or "").strip():
            continue
        stamp = repr(event.timestamp) if event.timestamp is not None else f"#{position}"
        index = seen[(event.event, stamp)]
        seen[(event.event, stamp)] += 1
        sender: Literal["customer", "bot"] = "customer" if event.event == "user" else "bot"
        key = _digest(sender_id, event.event, stamp, str(index))
        lines.append(Line(sender, event.text or "", key, event.parse_data if sender == "customer" else None))
    return lines


def _language(lines: Sequence[Line], given: str | None) -> str:
    """The given language, else the one the customer's messages are written in."""
    if given is not None:
        return given
    said = " ".join(line.text for line in lines if line.sender == "customer")
    return detect_language(said, default="en").language


def _turn_nlu(parse: RasaParseData | None) -> dict[str, Any] | None:
    """Rasa's understanding of a customer message, in the shape agents' traces read."""
    if parse is None or parse.intent is None or parse.intent.name is None:
        return None
    return {
        "intent": parse.intent.name,
        "confidence": parse.intent.confidence,
        "entities": [
            {"entity": e.entity, "value": str(e.value), "start": e.start, "end": e.end}
            for e in parse.entities
        ],
        "engine": SOURCE,
    }


def _routing_intent(lines: Sequence[Line], skills: dict[str, str]) -> str | None:
    """The intent that picks the agent skill: the latest one with a skill of its own, else the latest.

    A customer who asked about an order and then for a person should reach logistics, not
    whoever handles "human_handoff".
    """
    intents = [
        line.parse.intent.name
        for line in lines
        if line.parse is not None and line.parse.intent is not None and line.parse.intent.name
    ]
    return next((i for i in reversed(intents) if i in skills), intents[-1] if intents else None)


def _fit(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters: one long message must not cost the customer their person."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the handoff ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Importer:
    """Writes a Rasa transcript into a conversation, each message once (see `transcript`).

    Attributes:
        service: the running service.
        conversation: where the messages go.
        language: the language every imported turn is stored with.
        seen_key: the Redis set of keys already imported from this Rasa conversation, into
            this conversation or an earlier one (a second handoff sends the whole tracker again).
    """

    service: Service
    conversation: Conversation
    language: str
    seen_key: str

    async def run(self, lines: Sequence[Line]) -> ImportedCounts:
        """Store the lines not imported before, in order."""
        counts = Counter[str]()
        redis = self.service.redis
        for line in lines:
            if await redis.sismember(self.seen_key, line.key):
                continue
            if line.sender == "customer":
                turn, stored = await self._customer(line)
                if stored and not counts["customer"] and await self._first_customer_turn(turn):
                    await self.service.desk.metrics.conversation_started(
                        self.conversation.channel, self.language
                    )
            else:
                stored = await self._bot(line)
            counts[line.sender] += int(stored)
        await redis.expire(self.seen_key, IMPORTED_KEPT_SECONDS)
        return ImportedCounts(customer=counts["customer"], bot=counts["bot"])

    async def _customer(self, line: Line) -> tuple[Turn, bool]:
        """Store first, remember after: a crash in between leaves a retry to the store's own dedupe."""
        turn, stored, *_ = await self.service.store.append_customer_turn(
            self.conversation.id,
            _fit(line.text, self.service.settings.max_message_chars),
            self.conversation.channel,
            self.language,
            line.client_message_id,
            nlu=_turn_nlu(line.parse),
        )
        await self.service.redis.sadd(self.seen_key, line.key)
        return turn, stored

    async def _bot(self, line: Line) -> bool:
        """Claim the key first: bot turns have no message id, so the set is what stops a second copy."""
        if not await self.service.redis.sadd(self.seen_key, line.key):
            return False  # a concurrent retry took it
        try:
            await self.service.store.append_bot_turn(
                self.conversation.id,
                line.text,
                channel=self.conversation.channel,
                language=self.language,
                nlu={"action": SOURCE, "intent": None, "source": SOURCE},  # Rasa decided it, not Baton
            )
        except BotSilenced:
            # A person already has the conversation: what Rasa's bot said meanwhile is not kept.
            log.info("conversation %s: skipped a Rasa bot message (a person has it)", self.conversation.id)
            return False
        except Exception:
            await self.service.redis.srem(self.seen_key, line.key)
            raise
        return True

    async def _first_customer_turn(self, turn: Turn) -> bool:
        """True when ``turn`` is the conversation's first customer message: the automation rate
        counts the conversation as started then, as the pipeline does (Rasa may have spoken first)."""
        if turn.seq == 1:
            return True
        earlier = await self.service.store.turns(self.conversation.id, limit=turn.seq - 1)
        return not any(t.sender == "customer" for t in earlier)


# One handoff at a time per Rasa conversation in this process, so a retry that overlaps the
# first call imports in order (across replicas, the store and the imported set keep it to once).
_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


def _check_reason(reason: str) -> str:
    if reason not in REASONS:
        raise ApiError(400, "unknown_reason", f"unknown reason {reason!r}; use one of: {', '.join(REASONS)}")
    return reason


def _identity(body: HandoffBody) -> tuple[str, str]:
    if body.customer is not None:
        return body.customer.channel, body.customer.external_id
    return "web", VISITOR_PREFIX + body.sender_id


async def _queue(
    service: Service, conversation: Conversation, reason: str, intent: str | None, language: str
) -> tuple[Handoff, bool]:
    """The conversation's handoff, and whether this call created it (once per escalation)."""
    if conversation.state == State.BOT:
        escalation = Escalation((reason,), SEVERITY[reason])
        handoff = await service.desk.escalate(
            conversation.id, escalation, intent=intent, language=language, channel=conversation.channel
        )
        if handoff is not None:
            return handoff, True
    # Already with the queue or an agent (or another replica escalated it just now).
    handoff = await service.queue.for_conversation(conversation.id)
    if handoff is None:
        raise ApiError(503, "unavailable", "the conversation could not be queued; try again shortly")
    return handoff, False


async def _notice(service: Service, conversation_id: str) -> str | None:
    """The desk's latest message to the customer (queue position, nobody online, an agent joined).

    An assigner admits a new handoff and tells the customer where they stand a moment after it
    is queued: wait for that notice, up to `NOTICE_WAIT_SECONDS`.
    """
    store = service.store
    deadline = time.monotonic() + NOTICE_WAIT_SECONDS
    while True:
        length = await store.client.llen(store.keys.turns(conversation_id))
        recent = await store.turns(
            conversation_id, after_seq=max(0, length - NOTICE_LOOKBACK), limit=NOTICE_LOOKBACK
        )
        text = next((t.text for t in reversed(recent) if t.sender == "system"), None)
        if text is not None or time.monotonic() >= deadline:
            return text
        await asyncio.sleep(NOTICE_POLL_SECONDS)


def _web_access(service: Service, body: HandoffBody) -> dict[str, Any]:
    """A token for the default web visitor only: the caller names a Rasa conversation, and must not
    be able to get into any other visitor's chat by naming its visitor id."""
    if body.customer is not None:
        return {"visitor_id": None, "token": None, "expires_in": None}
    visitor_id = VISITOR_PREFIX + body.sender_id
    ttl = int(service.settings.visitor_token_days * 86400)
    return {
        "visitor_id": visitor_id,
        "token": make_token(service.web_secret, "web", visitor_id, ttl),
        "expires_in": ttl,
    }


@router.post("/handoff")
async def handoff(body: HandoffBody, service: Caller) -> HandoffAnswer:
    """Copy the Rasa conversation into Baton and queue it for a person; calling again changes nothing.

    An unknown ``reason`` answers 400 before anything is stored. A conversation already queued or
    with an agent answers its existing handoff (``queued: false``).
    """
    reason = _check_reason(body.reason)
    lines = transcript(body.sender_id, body.events)
    language = _language(lines, body.language)
    channel, external_id = _identity(body)
    lock = _locks.setdefault(body.sender_id, asyncio.Lock())
    async with lock:
        customer = await service.store.resolve_customer(channel, external_id)
        conversation = await service.store.current_conversation(customer.id, channel, language)
        seen_key = f"{service.store.keys.prefix}rasa:imported:{_digest(body.sender_id)}"
        imported = await Importer(service, conversation, language, seen_key).run(lines)
        intent = _routing_intent(lines, service.desk.config.skills)
        handoff, queued = await _queue(service, conversation, reason, intent, language)
        # action_baton_handoff pauses Rasa: resume it when this handoff closes (api.rasa_resume).
        await remember_sender(service.redis, service.settings.redis_prefix, conversation.id, body.sender_id)
    notice = await _notice(service, conversation.id)  # first: the state is the one it tells of
    current = await service.store.get_conversation(conversation.id)
    return HandoffAnswer(
        conversation_id=conversation.id,
        handoff_id=handoff.id,
        state=(current or conversation).state.value,
        queued=queued,
        reasons=list(handoff.reasons),
        language=handoff.language or language,
        notice=notice,
        imported=imported,
        **_web_access(service, body),
    )


# -- knowledge answers ------------------------------------------------------------------------


@router.post("/answer")
async def answer(body: AnswerBody, service: Caller) -> KnowledgeAnswer:
    """Baton's FAQ answer or article passage for ``text``, or ``answer: null``.

    Only knowledge counts: an FAQ (retrieval intent) answer or an article passage close enough
    for Baton's bot to show it. Anything else Baton's bot would say (a greeting, a request for an
    order number, "did you mean", its fallback) is ``null``, so the Rasa assistant keeps its own.
    """
    text = service.pipeline.check_text(body.text)
    policy = service.pipeline.policy
    parse = policy.payload_parse(text, body.language or "en") or await service.nlu.parse(text)
    action = await policy.decide(parse, DialogueContext(language=body.language))
    source = _knowledge_source(action)
    return KnowledgeAnswer(
        answer=action.text if source else None,
        source=source,
        intent=action.intent,
        article_id=action.source.removeprefix("article:") if source == "article" else None,
        confidence=round(_confidence(parse, action.intent), 4),
        language=action.language,
    )


def _knowledge_source(action: BotAction) -> Literal["faq", "article"] | None:
    """What kind of knowledge the bot's action answers with; None when it is not knowledge."""
    if action.kind == ActionKind.ARTICLE:
        return "article"
    if action.kind == ActionKind.ANSWER and "/" in action.intent:  # a retrieval intent: faq/<topic>
        return "faq"
    return None


def _confidence(parse: ParseResult, intent: str) -> float:
    """The NLU's confidence in ``intent`` (an out_of_scope the novelty check confirmed is in the ranking)."""
    scores = {score.name: score.confidence for score in (parse.intent, *parse.ranking)}
    return scores.get(intent, parse.intent.confidence)
