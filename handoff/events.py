"""Every event Baton publishes on Redis pub/sub, typed: what each one carries, and the one parser.

Two kinds of channel carry them, as JSON objects with a ``type``:

- ``P conv:{id}:events`` (and the capped stream of the same name): a conversation's own events,
  written by the conversation store's scripts (`conversations.scripts`) in the same step as the
  change: ``created`` (`ConversationCreated`), ``turn`` (`TurnStored`), ``transition``
  (`StateChanged`). Each carries the ``stream_id`` of its stream entry. Pub/sub loses what
  nobody hears: a follower that may have missed some reads the turns from the store instead.
- ``P handoff:events``: the handoff's events, written by the handoff scripts (`handoff.scripts`)
  in the same step as the change, each with the whole handoff: ``queued``, ``admitted``,
  ``assigned``, ``transferred``, ``closed``, ``first_response``, ``breach`` (`HandoffChanged`);
  an agent going online or offline (`AgentPresence`, `handoff.agents`); and two the API publishes:
  ``understood`` (a message to an agent, understood, with fresh suggestions: `Understood`) and
  ``note`` (an internal note: `Note`).

Publishers in Python build these classes and publish `Event.payload`; the Lua scripts write the
same fields (a contract test parses what every script publishes). Readers call `parse` once and
match on the class, instead of reading dicts by hand.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from conversations.model import Turn
from conversations.states import State
from handoff.handoffs import Handoff

log = logging.getLogger(__name__)

HandoffKind = Literal["queued", "admitted", "assigned", "transferred", "closed", "first_response", "breach"]
HANDOFF_KINDS: frozenset[str] = frozenset(get_args(HandoffKind))


@dataclass(frozen=True)
class ConversationCreated:
    """A customer's new conversation (``created``)."""

    conversation_id: str
    customer_id: str
    channel: str


@dataclass(frozen=True)
class TurnStored:
    """A turn stored in a conversation (``turn``); ``record`` is the turn's JSON as stored."""

    conversation_id: str
    record: str

    @property
    def turn(self) -> Turn:
        """The turn (parsed on demand: most readers only route the event)."""
        return Turn.from_dict(json.loads(self.record))


@dataclass(frozen=True)
class StateChanged:
    """A conversation's state changed (``transition``)."""

    conversation_id: str
    from_state: State
    to_state: State
    reason: str
    handoff_count: int


@dataclass(frozen=True)
class HandoffChanged:
    """A handoff changed (``queued``, ``admitted``, ``assigned``...), with the handoff after the change.

    ``from_agent_id`` and ``from_skill`` are set on ``transferred``.
    """

    kind: HandoffKind
    handoff: Handoff
    from_agent_id: str | None = None
    from_skill: str | None = None

    @property
    def conversation_id(self) -> str:
        """The handoff's conversation."""
        return self.handoff.conversation_id


@dataclass(frozen=True)
class AgentPresence:
    """An agent went online or offline (``agent_online`` / ``agent_offline``)."""

    agent_id: str
    online: bool
    at: float = 0.0

    @property
    def payload(self) -> dict[str, Any]:
        """The event as published."""
        return {
            "type": "agent_online" if self.online else "agent_offline",
            "handoff_id": None,
            "conversation_id": None,
            "agent_id": self.agent_id,
            "at": self.at,
        }


@dataclass(frozen=True)
class Understood:
    """A message to an agent was understood (``understood``): its NLU and fresh reply suggestions."""

    conversation_id: str
    seq: int
    nlu: dict[str, Any]
    suggestions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def payload(self) -> dict[str, Any]:
        """The event as published (and forwarded to agents as it is)."""
        return {
            "type": "understood",
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "nlu": self.nlu,
            "suggestions": self.suggestions,
        }


@dataclass(frozen=True)
class Note:
    """An internal note on a conversation (``note``), by an agent or a channel (WeChat's delivery notes)."""

    conversation_id: str
    note: dict[str, Any]

    @property
    def payload(self) -> dict[str, Any]:
        """The event as published (and forwarded to agents as it is)."""
        return {"type": "note", "conversation_id": self.conversation_id, "note": self.note}


Event = ConversationCreated | TurnStored | StateChanged | HandoffChanged | AgentPresence | Understood | Note


def parse(payload: dict[str, Any]) -> Event | None:
    """The typed event of a published payload; None (logged) for one Baton does not publish."""
    try:
        return _parse(payload)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignored a malformed %r event: %s", payload.get("type"), exc)
        return None


def parse_text(text: str | bytes) -> Event | None:
    """`parse` of a pub/sub message's data."""
    try:
        payload = json.loads(text)
    except ValueError:
        log.warning("ignored an event that is not JSON")
        return None
    return parse(payload) if isinstance(payload, dict) else None


def _parse(payload: dict[str, Any]) -> Event | None:
    kind = payload.get("type")
    if kind == "turn":
        return TurnStored(payload["conversation_id"], payload["turn"])
    if kind == "transition":
        return StateChanged(
            payload["conversation_id"],
            State(payload["from"]),
            State(payload["to"]),
            payload.get("reason") or "",
            int(payload.get("handoff_count") or 0),
        )
    if kind == "created":
        return ConversationCreated(payload["conversation_id"], payload["customer_id"], payload["channel"])
    if kind in HANDOFF_KINDS:
        return HandoffChanged(
            kind,  # type: ignore[arg-type]  # checked against HANDOFF_KINDS
            Handoff.from_dict(payload["handoff"]),
            payload.get("from_agent_id") or None,
            payload.get("from_skill") or None,
        )
    if kind in ("agent_online", "agent_offline"):
        return AgentPresence(payload["agent_id"], kind == "agent_online", float(payload.get("at") or 0.0))
    if kind == "understood":
        return Understood(
            payload["conversation_id"],
            int(payload["seq"]),
            payload["nlu"],
            list(payload.get("suggestions") or []),
        )
    if kind == "note":
        return Note(payload["conversation_id"], payload["note"])
    log.warning("ignored an event of unknown type %r", kind)
    return None
