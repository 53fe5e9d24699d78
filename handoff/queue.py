"""The handoff queue: every change of who holds a conversation, and what the queue holds now.

A handoff is one escalation of one conversation (`handoff.handoffs.Handoff`). Its life, each
step one Lua script (`handoff.scripts`) that changes the conversation's state and the handoff's
record together, so no crash can leave them disagreeing::

    commit_turn / escalate   bot -> queued    the handoff written (new) and put on the stream
    admit                    (queued)         an assigner took it from the stream: waiting, by
                                              priority; ``ticket`` when nobody online could take it
    claim                    queued -> assigned   to one agent: online, under capacity, still
                                              waiting; the "joined" notice to the customer
    transfer_to_agent        (assigned)       to another agent
    transfer_to_skill        assigned -> queued   back to waiting under another skill
    finish                   -> resolved / bot    closed: resolved, handed back, or a waiting
                                              chat closed (the agent's slot freed)

Two assigners, or an assigner and an agent pressing "accept", can never assign one handoff
twice or put an agent over capacity. Each script appends its events to the audit stream and
publishes them on the events channel in the same step (see `handoff.keys` for every key).

Priority is a virtual arrival time: ``created_at - vip_priority_seconds * vip -
severity_priority_seconds * severity``, lower first, ties older first. A handoff whose skill
(and language) no online agent has simply waits; it is not widened to another skill.
Routing waiting handoffs to agents is `handoff.routing`; where one stands, `handoff.standing`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Self

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from conversations.model import Conversation, Turn, format_time
from conversations.redis_client import RedisClientHolder, connect
from conversations.states import State
from conversations.store import ConversationStore, draft_turn, stored_turn, turn_body
from handoff.agents import AgentDirectory
from handoff.events import Note, Understood
from handoff.handoffs import (
    ROUTINGS,
    ClaimResult,
    Handoff,
    HandoffRequest,
    Outcome,
    Routing,
    as_dict,
    priority_order,
)
from handoff.keys import DEFAULT_PREFIX, GROUP, HandoffKeys
from handoff.metrics import Counts, Metrics, counts_arg, handoff_counts, observation
from handoff.notices import notice
from handoff.scripts import (
    ADMIT,
    BREACHES,
    CLAIM,
    COMMIT_TURN,
    FINISH,
    SEND,
    TRANSFER_AGENT,
    TRANSFER_SKILL,
)
from handoff.signal_store import KEPT_SECONDS, SignalStore
from handoff.signals import SignalState

if TYPE_CHECKING:
    from knowledge_index.handoff_file import HandoffConfig

# The pub/sub channel of every handoff and agent event (`HandoffKeys.events`), by prefix.
HANDOFF_EVENTS = "{prefix}handoff:events"


class HandoffRefused(Exception):
    """A change the queue refused because the conversation or its handoff is not as the caller thought.

    Attributes:
        reason: ``not_found``, ``not_assigned``, ``not_waiting`` or ``not_yours``.
        state: the conversation's state when it was refused ('' if unknown).
    """

    def __init__(self, reason: str, state: str = "") -> None:
        super().__init__(f"{reason} (the conversation is {state or 'gone'})")
        self.reason = reason
        self.state = state


@dataclass(frozen=True)
class TurnCommit:
    """Everything that handling one customer turn changes, for `HandoffQueue.commit_turn`.

    Attributes:
        conversation_id: the conversation.
        seq: the customer turn handled.
        handled: the conversation's handled mark as read before handling; the commit happens
            only if it still reads so. None when no customer turn is being handled (an
            escalation asked for from outside, e.g. by a Rasa assistant).
        reply: the bot's turn, drafted (`conversations.store.draft_turn`), or None.
        context: the bot's dialogue context for the next turn, or None to leave it.
        signals: the escalation signals after this turn, or None to leave them.
        escalation: the handoff to open, or None.
        reason: the escalation's main reason.
        first_handoff: this is the conversation's first escalation (for the automation rate).
        counts: more metrics to count with it (the conversation's start, say).
    """

    conversation_id: str
    seq: int = 0
    handled: int | None = None
    reply: Turn | None = None
    context: dict[str, Any] | None = None
    signals: SignalState | None = None
    escalation: HandoffRequest | None = None
    reason: str = ""
    first_handoff: bool = False
    counts: Counts = field(default_factory=dict)


@dataclass(frozen=True)
class Committed:
    """What `HandoffQueue.commit_turn` did.

    ``outcome``: ``ok``; ``stale`` (another handler finished the turn first: nothing written);
    ``refused`` (the conversation left the bot, so the bot may neither answer nor escalate:
    nothing written; read it again); ``missing`` (no such conversation).
    """

    outcome: Literal["ok", "stale", "refused", "missing"]
    reply: Turn | None = None
    handoff_id: str | None = None


class HandoffQueue(RedisClientHolder):
    """Handoffs in Redis: escalate, admit, claim, transfer, finish; events for the API; reads.

    Args:
        client: a ``redis.asyncio.Redis`` made with ``decode_responses=True``.
        store: the conversation store (made on ``client`` if None).
        prefix: put before every key; the same as the conversation store's.
        config: a knowledge base's escalation settings; when given, its four timing settings
            replace the keywords below.
        vip_priority_seconds: a VIP is served as if they had waited this much longer.
        severity_priority_seconds: each level of severity counts as this much longer waiting.
        average_handle_seconds: how long an agent spends on a chat, for the wait estimate.
        first_response_seconds: an agent should answer within this long of the handoff.
        audit_maxlen: about how many events the audit stream keeps.
        routing: ``assign`` (push waiting handoffs to agents) or ``broadcast`` (agents accept them).
        owns_client: close ``client`` in `aclose`.
    """

    def __init__(
        self,
        client: Redis,
        store: ConversationStore | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        config: HandoffConfig | None = None,
        vip_priority_seconds: float = 300,
        severity_priority_seconds: float = 60,
        average_handle_seconds: float = 240,
        first_response_seconds: float = 30,
        audit_maxlen: int = 100_000,
        routing: Routing = "assign",
        owns_client: bool = False,
    ) -> None:
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}, not {routing!r}")
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the Redis client must be created with decode_responses=True")
        self.client = client
        self._owns_client = owns_client
        self.keys = HandoffKeys(prefix)
        self.store = store if store is not None else ConversationStore(client, prefix=prefix)
        self.agents = AgentDirectory(client, prefix)
        self.metrics = Metrics(client, prefix)
        self.signals = SignalStore(client, prefix)
        if config is not None:  # a knowledge base's handoff.yml wins over the keyword defaults
            vip_priority_seconds = config.vip_priority_seconds
            severity_priority_seconds = config.severity_priority_seconds
            average_handle_seconds = config.average_handle_seconds
            first_response_seconds = config.first_response_seconds
        self.vip_priority_seconds = vip_priority_seconds
        self.severity_priority_seconds = severity_priority_seconds
        self.average_handle_seconds = average_handle_seconds
        self.first_response_seconds = first_response_seconds
        self.audit_maxlen = audit_maxlen
        self.routing = routing
        self._group_ready = False
        self._commit_turn = client.register_script(COMMIT_TURN)
        self._admit = client.register_script(ADMIT)
        self._claim = client.register_script(CLAIM)
        self._finish = client.register_script(FINISH)
        self._transfer_agent = client.register_script(TRANSFER_AGENT)
        self._transfer_skill = client.register_script(TRANSFER_SKILL)
        self._send = client.register_script(SEND)
        self._breaches = client.register_script(BREACHES)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX, **settings: Any) -> Self:
        """A queue with its own client for ``url``; ``settings`` as for the constructor."""
        client = connect(url)
        return cls(client, prefix=prefix, owns_client=True, **settings)

    # -- the stream ---------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the assigners' consumer group (and the stream) if missing.

        The group starts at id 0, so entries added before it existed are still delivered.
        """
        if self._group_ready:
            return
        try:
            await self.client.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def forget_group(self) -> None:
        """Make the next `ensure_group` ask Redis again (after a NOGROUP error)."""
        self._group_ready = False

    # -- changes of hands ---------------------------------------------------------------------

    def priority_of(self, created_at: float, vip: bool, severity: int) -> float:
        """The virtual arrival time: lower is served first."""
        return created_at - self.vip_priority_seconds * int(vip) - self.severity_priority_seconds * severity

    async def commit_turn(self, commit: TurnCommit) -> Committed:
        """Write what handling one customer turn changed, in one step, or nothing.

        The handled mark, the bot's turn, its dialogue context, the escalation signals and, with
        an escalation, the state ``bot -> queued``, the new handoff and its stream entry (an
        assigner admits it) and the handoff counts: all or none. Nothing is written when the
        handled mark moved on meanwhile (``stale``) or when the bot may no longer speak
        (``refused``: a person took the conversation while the bot was thinking).
        """
        if commit.escalation is not None and not commit.reason:
            raise ValueError("an escalation needs its main reason")
        now = time.time()
        record = "{}"
        if commit.escalation is not None:
            record = json.dumps(self._record(commit.escalation, now), ensure_ascii=False)
        signals = commit.signals
        reply = commit.reply
        escalation = commit.escalation
        counts = dict(commit.counts)
        if escalation is not None:
            first = commit.first_handoff
            for name, amount in handoff_counts(
                commit.reason, escalation.channel, escalation.language, first
            ).items():
                counts[name] = counts.get(name, 0) + amount
        reply_language = reply.language if reply is not None else None
        outcome, *rest = await self._commit_turn(
            args=[
                *self._args(now),
                commit.conversation_id,
                "" if commit.handled is None else str(commit.handled),
                str(commit.seq),
                turn_body(reply) if reply is not None else "",
                reply_language or "",
                json.dumps(commit.context, ensure_ascii=False) if commit.context is not None else "",
                self.signals.key(commit.conversation_id) if signals is not None else "",
                self.signals.dumps(signals) if signals is not None else "",
                KEPT_SECONDS,
                commit.reason if escalation is not None else "",
                self.store.transitions_arg,
                record,
                counts_arg(counts) if counts else "",
            ]
        )
        if outcome == "ok":
            turn_record, handoff_id = rest
            return Committed("ok", stored_turn(turn_record) if turn_record else None, handoff_id or None)
        return Committed(outcome)

    async def escalate(self, request: HandoffRequest, reason: str, *, first: bool) -> Handoff | None:
        """Hand a conversation the bot holds to the queue, in one step; None if the bot no longer holds it."""
        committed = await self.commit_turn(
            TurnCommit(request.conversation_id, escalation=request, reason=reason, first_handoff=first)
        )
        return await self.get(committed.handoff_id) if committed.handoff_id else None

    async def admit(self, handoff_id: str) -> Handoff | None:
        """new -> waiting (nothing if it is past new); sets ``ticket`` when nobody online could take it.

        Only the assigners call this, for each entry of the handoff stream (one owner of admission).

        Returns:
            The handoff, or None if unknown.
        """
        reply = await self._admit(args=[*self._args(), handoff_id])
        return Handoff.from_hash(as_dict(reply[1])) if reply[0] != "missing" else None

    async def claim(self, handoff_id: str, agent_id: str) -> ClaimResult:
        """Assign a waiting handoff to an agent and move its conversation to assigned, in one step.

        The script checks that the handoff is waiting, the agent online and under
        ``max_chats``; skills and languages are the caller's business (`handoff.routing`
        checks them, the API checks them for a manual accept). The customer is told that the
        agent joined in the same step. A handoff whose conversation is no longer queued is
        closed instead (``not_waiting``).
        """
        now = time.time()
        handoff = await self.get(handoff_id)
        if handoff is None:
            return ClaimResult(False, "unknown")
        agent = await self.agents.get(agent_id)
        name = agent.name if agent is not None else agent_id
        channel, language = await self._where(handoff.conversation_id, handoff.language)
        joined = draft_turn(
            handoff.conversation_id, "system", notice("joined", language, name=name), channel, language
        )
        counts: Counts = {}
        if handoff.transfers == 0:  # a transfer's second wait is not the customer's first wait
            counts = observation("wait", max(0.0, now - handoff.created_at))
        reply = await self._claim(
            args=[
                *self._args(now),
                handoff_id,
                agent_id,
                self.store.transitions_arg,
                turn_body(joined),
                language or "",
                counts_arg(counts) if counts else "",
            ]
        )
        if reply[0] != "ok":
            return ClaimResult(
                False, reply[0], await self.get(handoff_id) if reply[0] == "not_waiting" else None
            )
        return ClaimResult(True, None, Handoff.from_hash(as_dict(reply[1])))

    async def transfer_to_agent(
        self, handoff_id: str, to_agent_id: str, *, actor: str = "", notice_turn: Turn | None = None
    ) -> ClaimResult:
        """Move an assigned handoff to another agent (online, under capacity); ``transfers`` += 1.

        ``actor``: the agent asking, who must hold it ('' for a supervisor). ``notice_turn`` is
        written to the customer in the same step.
        """
        reply = await self._transfer_agent(
            args=[*self._args(), handoff_id, actor, to_agent_id, *_notice_args(notice_turn)]
        )
        if reply[0] != "ok":
            return ClaimResult(False, reply[0])
        return ClaimResult(True, None, Handoff.from_hash(as_dict(reply[1])))

    async def transfer_to_skill(
        self, handoff_id: str, skill: str, *, actor: str = "", notice_turn: Turn | None = None
    ) -> ClaimResult:
        """Put the handoff back to waiting under ``skill`` (its agent freed); ``transfers`` += 1.

        It keeps its priority. An assigned one's conversation moves ``assigned -> queued`` in
        the same step, as does ``notice_turn``.
        """
        if not skill:
            raise ValueError("a skill must not be empty")
        reply = await self._transfer_skill(
            args=[
                *self._args(),
                handoff_id,
                actor,
                skill,
                self.store.transitions_arg,
                *_notice_args(notice_turn),
            ]
        )
        if reply[0] != "ok":
            return ClaimResult(False, reply[0])
        return ClaimResult(True, None, Handoff.from_hash(as_dict(reply[2])))

    async def finish(
        self,
        handoff: Handoff,
        *,
        actor: str,
        expected: State,
        target: State,
        outcome: Outcome,
        notice_turn: Turn | None = None,
        forget_signals: bool = False,
        counts: Counts | None = None,
    ) -> Conversation:
        """End a handoff: the conversation ``expected -> target`` and the handoff closed, in one step.

        Resolving is ``assigned -> resolved``, handing back ``assigned -> bot`` (with
        ``forget_signals``, so the escalation signals start again from zero), closing a
        waiting chat ``queued -> resolved``. ``actor`` must hold an assigned chat ('' for a
        supervisor). ``notice_turn`` and ``counts`` are written in the same step.

        Raises:
            HandoffRefused: the handoff or its conversation is not as expected (taken, closed,
                another agent's).
        """
        reply = await self._finish(
            args=[
                *self._args(),
                handoff.id,
                actor,
                expected.value,
                target.value,
                outcome,
                self.store.transitions_arg,
                *_notice_args(notice_turn),
                self.signals.key(handoff.conversation_id) if forget_signals else "",
                counts_arg(counts) if counts else "",
            ]
        )
        if reply[0] != "ok":
            raise HandoffRefused(reply[0], reply[1])
        return Conversation.from_dict(as_dict(reply[1]))

    async def send(
        self, handoff: Handoff, *, actor: str, turn: Turn, client_message_id: str | None = None
    ) -> tuple[Turn, float | None]:
        """Store an agent's message on an assigned chat; the first one stops the first-response clock.

        Both in one step, with the first-response count. ``actor`` must hold the chat ('' for
        a supervisor). A retry with the same ``client_message_id`` stores nothing and returns
        the first one's turn.

        Returns:
            The stored turn, and the seconds since the handoff if this was the first response.

        Raises:
            HandoffRefused: the chat is not assigned (any more), or it is another agent's.
        """
        now = time.time()
        counts = observation("first_response", max(0.0, now - handoff.created_at))
        reply = await self._send(
            args=[
                *self._args(now),
                handoff.id,
                actor,
                turn_body(turn),
                turn.language or "",
                counts_arg(counts),
                client_message_id or "",
            ]
        )
        if reply[0] != "ok":
            raise HandoffRefused(reply[0], reply[1] if len(reply) > 1 else "")
        return stored_turn(reply[1]), float(reply[2]) if reply[2] else None

    async def check_breaches(self, now: float | None = None, limit: int = 100) -> list[Handoff]:
        """Mark handoffs unanswered for longer than ``first_response_seconds`` as breached.

        Each handoff is returned, counted and its ``breach`` event published once only,
        whoever calls. ``now`` (epoch seconds) defaults to the clock.
        """
        cutoff = (time.time() if now is None else now) - self.first_response_seconds
        flats = await self._breaches(args=[*self._args(), repr(cutoff), limit])
        return [Handoff.from_hash(as_dict(flat)) for flat in flats]

    async def publish(self, event: Understood | Note) -> None:
        """Publish an event of the API's (a message understood, a note) on the handoff events channel."""
        payload = {"at": time.time(), **event.payload}
        await self.client.publish(self.keys.events, json.dumps(payload, ensure_ascii=False))

    # -- reads -------------------------------------------------------------------------------

    async def get(self, handoff_id: str) -> Handoff | None:
        """The handoff, or None."""
        data = await self.client.hgetall(self.keys.handoff(handoff_id))
        return Handoff.from_hash(data) if data else None

    async def for_conversation(self, conversation_id: str) -> Handoff | None:
        """The conversation's latest handoff, or None."""
        ids = await self.client.zrange(self.keys.by_conversation(conversation_id), -1, -1)
        return await self.get(ids[0]) if ids else None

    async def waiting(self, skills: set[str] | None = None, limit: int = 100) -> list[Handoff]:
        """Waiting handoffs (of any of ``skills``, or all), best priority first, at most ``limit``."""
        if limit < 1:
            return []
        keys = [self.keys.waiting()] if skills is None else [self.keys.waiting(s) for s in sorted(skills)]
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrange(key, 0, limit - 1)
            replies = await pipe.execute()
        ids = {handoff_id for reply in replies for handoff_id in reply}
        handoffs = [h for h in await self.many(ids) if h.status == "waiting"]
        return sorted(handoffs, key=priority_order)[:limit]

    async def assigned_to(self, agent_id: str) -> list[Handoff]:
        """The handoffs the agent holds now, oldest assignment first."""
        handoffs = await self.many(await self.client.smembers(self.keys.chats(agent_id)))
        mine = [h for h in handoffs if h.status == "assigned" and h.agent_id == agent_id]
        return sorted(mine, key=lambda h: (h.assigned_at or 0.0, h.id))

    async def tickets(self) -> list[Handoff]:
        """Left messages: waiting handoffs admitted while nobody who could take them was online, oldest first."""
        handoffs = await self.many(await self.client.zrange(self.keys.tickets, 0, -1))
        return [h for h in handoffs if h.status == "waiting"]

    async def many(self, ids: set[str] | list[str]) -> list[Handoff]:
        """The handoffs of ``ids`` that exist, sorted by id."""
        ordered = sorted(ids)
        async with self.client.pipeline(transaction=False) as pipe:
            for handoff_id in ordered:
                pipe.hgetall(self.keys.handoff(handoff_id))
            hashes = await pipe.execute()
        return [Handoff.from_hash(data) for data in hashes if data]

    # -- internals ---------------------------------------------------------------------------

    def _args(self, now: float | None = None) -> list[str | int]:
        """ARGV[1..7] of every handoff script (`handoff.scripts`), on one clock."""
        moment = time.time() if now is None else now
        total, today = self.metrics.hashes(moment)
        iso = format_time(datetime.fromtimestamp(moment, UTC))
        return [*self.store.common_args(iso), repr(moment), self.audit_maxlen, total, today]

    def _record(self, request: HandoffRequest, now: float) -> dict[str, str]:
        """A new handoff's fields as text (the script adds its id and number)."""
        return {
            "customer_id": request.customer_id,
            "channel": request.channel,
            "language": request.language or "",
            "skill": request.skill,
            "reasons": json.dumps(list(request.reasons), ensure_ascii=False),
            "severity": str(request.severity),
            "vip": "1" if request.vip else "0",
            "summary": request.summary,
            "status": "new",
            "agent_id": "",
            "ticket": "0",
            "priority": repr(self.priority_of(now, request.vip, request.severity)),
            "created_at": repr(now),
            "updated_at": repr(now),
            "breached": "0",
            "transfers": "0",
        }

    async def _where(self, conversation_id: str, language: str | None) -> tuple[str, str | None]:
        """The channel and language of a notice to the conversation's customer."""
        channel, stored = await self.store.defaults(conversation_id)
        return channel, language or stored


def _notice_args(turn: Turn | None) -> tuple[str, str]:
    """A notice as the scripts take it: its body and language ('' for no notice)."""
    if turn is None:
        return "", ""
    return turn_body(turn), turn.language or ""


__all__ = [
    "HANDOFF_EVENTS",
    "Committed",
    "HandoffQueue",
    "HandoffRefused",
    "TurnCommit",
]
