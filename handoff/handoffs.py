"""The handoff's records: what the queue keeps of each escalation, and the answers of its operations.

A handoff is one escalation of one conversation (id ``{conversation_id}:{handoff_number}``).
Its ``status`` follows the conversation's state, changed with it in one script
(`handoff.scripts`): ``new`` and ``waiting`` while the conversation is ``queued`` (new until an
assigner admits it to the waiting pool), ``assigned`` while it is ``assigned``, ``closed`` once
it is ``resolved`` or back with the bot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

Status = Literal["new", "waiting", "assigned", "closed"]
Outcome = Literal["resolved", "handback", "closed"]
Routing = Literal["assign", "broadcast"]
ROUTINGS: tuple[Routing, ...] = ("assign", "broadcast")
OUTCOMES: tuple[str, ...] = ("resolved", "handback", "closed")


@dataclass(frozen=True)
class HandoffRequest:
    """What the turn pipeline knows when it hands a conversation to a person."""

    conversation_id: str
    customer_id: str
    channel: str
    language: str  # "zh" or "en"; "" lets any agent take it
    skill: str
    reasons: tuple[str, ...]
    severity: int  # 1 (low) to 3 (high)
    vip: bool
    summary: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.severity <= 3:
            raise ValueError("severity must be 1, 2 or 3")
        if not self.skill:
            raise ValueError("a handoff needs a skill")
        object.__setattr__(self, "reasons", tuple(self.reasons))


def _opt_float(text: str | None) -> float | None:
    return float(text) if text else None


@dataclass(frozen=True)
class Handoff:
    """One escalation of one conversation, as the queue keeps it. Times are epoch seconds."""

    id: str
    conversation_id: str
    handoff_number: int
    customer_id: str
    channel: str
    language: str
    skill: str
    reasons: tuple[str, ...]
    severity: int
    vip: bool
    summary: str
    status: Status
    priority: float
    created_at: float
    agent_id: str | None = None
    ticket: bool = False
    assigned_at: float | None = None  # when the current agent got it
    first_response_at: float | None = None
    closed_at: float | None = None
    outcome: Outcome | None = None
    breached: bool = False
    transfers: int = 0
    updated_at: float = field(default=0.0)

    @property
    def is_open(self) -> bool:
        """True until closed."""
        return self.status != "closed"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the events carry the same shape under ``handoff``."""
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "handoff_number": self.handoff_number,
            "customer_id": self.customer_id,
            "channel": self.channel,
            "language": self.language,
            "skill": self.skill,
            "reasons": list(self.reasons),
            "severity": self.severity,
            "vip": self.vip,
            "summary": self.summary,
            "status": self.status,
            "agent_id": self.agent_id,
            "ticket": self.ticket,
            "priority": self.priority,
            "created_at": self.created_at,
            "assigned_at": self.assigned_at,
            "first_response_at": self.first_response_at,
            "closed_at": self.closed_at,
            "outcome": self.outcome,
            "breached": self.breached,
            "transfers": self.transfers,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The inverse of `to_dict` (also reads the ``handoff`` of a published event)."""

        def opt(name: str) -> float | None:
            value = data.get(name)
            return None if value is None else float(value)

        return cls(
            id=data["id"],
            conversation_id=data["conversation_id"],
            handoff_number=int(data["handoff_number"]),
            customer_id=data["customer_id"],
            channel=data["channel"],
            language=data.get("language") or "",
            skill=data["skill"],
            reasons=tuple(data.get("reasons") or ()),
            severity=int(data["severity"]),
            vip=bool(data.get("vip")),
            summary=data.get("summary") or "",
            status=data["status"],
            priority=float(data["priority"]),
            created_at=float(data["created_at"]),
            agent_id=data.get("agent_id") or None,
            ticket=bool(data.get("ticket")),
            assigned_at=opt("assigned_at"),
            first_response_at=opt("first_response_at"),
            closed_at=opt("closed_at"),
            outcome=data.get("outcome") or None,
            breached=bool(data.get("breached")),
            transfers=int(data.get("transfers") or 0),
            updated_at=float(data.get("updated_at") or data["created_at"]),
        )

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Self:
        """Read the all-text Redis hash."""
        return cls(
            id=data["id"],
            conversation_id=data["conversation_id"],
            handoff_number=int(data["handoff_number"]),
            customer_id=data["customer_id"],
            channel=data["channel"],
            language=data.get("language", ""),
            skill=data["skill"],
            reasons=tuple(_json_list(data.get("reasons", "[]"))),
            severity=int(data["severity"]),
            vip=data.get("vip") == "1",
            summary=data.get("summary", ""),
            status=data["status"],  # type: ignore[arg-type]  # written only by the scripts
            priority=float(data["priority"]),
            created_at=float(data["created_at"]),
            agent_id=data.get("agent_id") or None,
            ticket=data.get("ticket") == "1",
            assigned_at=_opt_float(data.get("assigned_at")),
            first_response_at=_opt_float(data.get("first_response_at")),
            closed_at=_opt_float(data.get("closed_at")),
            outcome=data.get("outcome") or None,  # type: ignore[arg-type]
            breached=data.get("breached") == "1",
            transfers=int(data.get("transfers") or 0),
            updated_at=float(data.get("updated_at") or data["created_at"]),
        )


def _json_list(text: str) -> list[str]:
    value = json.loads(text)
    return list(value) if isinstance(value, list) else []


@dataclass(frozen=True)
class ClaimResult:
    """The outcome of `HandoffQueue.claim` and the transfers.

    ``reason`` when not ok: ``not_waiting`` (taken, closed, or its conversation is gone),
    ``agent_offline``, ``at_capacity``, ``unknown`` (no such handoff), ``unknown_agent``;
    transfers also ``not_assigned``, ``same_agent`` and ``closed``.
    """

    ok: bool
    reason: str | None = None
    handoff: Handoff | None = None

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class QueueStanding:
    """Where a waiting handoff stands; every field None when it is not waiting.

    ``estimated_seconds`` is also None while no agent who could take it is online.
    """

    position: int | None  # 1 = next among the handoffs of its skill
    waiting: int | None  # handoffs of its skill waiting now
    agents_online: int | None  # online agents with its skill and language
    estimated_seconds: int | None

    def to_dict(self) -> dict[str, int | None]:
        """A JSON-ready dict."""
        return {
            "position": self.position,
            "waiting": self.waiting,
            "agents_online": self.agents_online,
            "estimated_seconds": self.estimated_seconds,
        }


def as_dict(flat: Sequence[str]) -> dict[str, str]:
    """An HGETALL reply given as a flat [field, value, ...] array."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def priority_order(handoff: Handoff) -> tuple[float, float, str]:
    """Priority order: lower score first, ties older first."""
    return (handoff.priority, handoff.created_at, handoff.id)
