"""The conversation domain: customers, their channel identities, conversations and turns.

Plain frozen dataclasses with JSON helpers. Times are timezone-aware UTC ``datetime`` objects,
written as ISO 8601 with microseconds so that their text sorts in time order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self, TypeVar

from conversations.states import OPEN_STATES, State

CHANNELS = ("web", "app", "wechat")
# Channels whose replies go out through the channel's own API (WeChat's customer-service messages);
# the web page and the app fetch theirs from the store. See `conversations.keys`, ``outbox``.
PUSHED_CHANNELS = ("wechat",)
SENDERS = ("customer", "bot", "agent", "system")
# Verified identifiers that join identities into one customer (WeChat vouches for a UnionId).
LINK_KINDS = ("phone", "member_id", "wechat_unionid")
DEFAULT_TIER = "standard"

Model = TypeVar("Model", "ChannelIdentity", "Customer", "Conversation", "Turn")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """``moment`` as ISO 8601 UTC with microseconds (fixed width, so the text sorts by time)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    """The inverse of `format_time`."""
    return datetime.fromisoformat(text)


def _check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}")


@dataclass(frozen=True)
class ChannelIdentity:
    """Who a customer is on one channel: a web visitor id, an app user id, a WeChat openid."""

    channel: str
    external_id: str

    def __post_init__(self) -> None:
        _check_channel(self.channel)
        if not self.external_id:
            raise ValueError("external_id must not be empty")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"channel": self.channel, "external_id": self.external_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The inverse of `to_dict`."""
        return cls(channel=data["channel"], external_id=data["external_id"])


@dataclass(frozen=True)
class Customer:
    """One person, whichever channels they write from."""

    id: str
    tier: str = DEFAULT_TIER  # "standard", "vip", ...: routing and priority read it
    display_name: str | None = None
    created_at: datetime = field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "tier": self.tier,
            "display_name": self.display_name,
            "created_at": format_time(self.created_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The inverse of `to_dict`."""
        return cls(
            id=data["id"],
            tier=data.get("tier") or DEFAULT_TIER,
            display_name=data.get("display_name") or None,
            created_at=parse_time(data["created_at"]),
        )


@dataclass(frozen=True)
class Conversation:
    """One support conversation of a customer, from first message to resolution."""

    id: str
    customer_id: str
    channel: str  # the channel it started on; each turn records its own
    state: State = State.BOT
    language: str | None = None  # the language of the customer's latest turn
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    handoff_count: int = 0  # escalations so far (each bot -> queued)
    last_reason: str | None = None  # the reason given for the latest escalation
    received: int = 0  # the seq of the latest customer turn stored
    handled: int = 0  # the seq of the latest customer turn handled (answered, understood, rated)

    def __post_init__(self) -> None:
        _check_channel(self.channel)
        object.__setattr__(self, "state", State(self.state))

    @property
    def is_open(self) -> bool:
        """True until the conversation is resolved."""
        return self.state in OPEN_STATES

    @property
    def pending(self) -> bool:
        """True while a customer message of the conversation waits to be handled."""
        return self.handled < self.received

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "customer_id": self.customer_id,
            "channel": self.channel,
            "state": self.state.value,
            "language": self.language,
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
            "handoff_count": self.handoff_count,
            "last_reason": self.last_reason,
            "received": self.received,
            "handled": self.handled,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The inverse of `to_dict`; also reads the all-text form of a Redis hash."""
        return cls(
            id=data["id"],
            customer_id=data["customer_id"],
            channel=data["channel"],
            state=State(data["state"]),
            language=data.get("language") or None,
            created_at=parse_time(data["created_at"]),
            updated_at=parse_time(data["updated_at"]),
            handoff_count=int(data.get("handoff_count") or 0),
            last_reason=data.get("last_reason") or None,
            received=int(data.get("received") or 0),
            handled=int(data.get("handled") or 0),
        )


@dataclass(frozen=True)
class Turn:
    """One message in a conversation. ``seq`` counts from 1 without gaps."""

    id: str
    conversation_id: str
    seq: int
    sender: str  # customer, bot, agent or system
    channel: str
    language: str | None
    text: str
    nlu: dict[str, Any] | None = None  # what the bot understood (customer turns)
    client_message_id: str | None = None  # the channel's message id, for dedupe
    created_at: datetime = field(default_factory=utcnow)
    timings: dict[str, float] = field(default_factory=dict)  # e.g. {"nlu_ms": 7.1}
    buttons: list[dict[str, str]] = field(default_factory=list)  # quick replies: {"title", "payload"}
    reply_to: int | None = None  # a bot turn: the seq of the customer turn it answers
    author: str | None = None  # an agent turn: the agent who wrote it (chats move between agents)

    def __post_init__(self) -> None:
        _check_channel(self.channel)
        if self.sender not in SENDERS:
            raise ValueError(f"unknown sender {self.sender!r}; expected one of {', '.join(SENDERS)}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "seq": self.seq,
            "id": self.id,
            "conversation_id": self.conversation_id,
            "sender": self.sender,
            "channel": self.channel,
            "language": self.language,
            "text": self.text,
            "nlu": self.nlu,
            "client_message_id": self.client_message_id,
            "created_at": format_time(self.created_at),
            "timings": dict(self.timings),
            "buttons": [dict(b) for b in self.buttons],
            "reply_to": self.reply_to,
            "author": self.author,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The inverse of `to_dict`."""
        return cls(
            id=data["id"],
            conversation_id=data["conversation_id"],
            seq=int(data["seq"]),
            sender=data["sender"],
            channel=data["channel"],
            language=data.get("language"),
            text=data["text"],
            nlu=data.get("nlu"),
            client_message_id=data.get("client_message_id"),
            created_at=parse_time(data["created_at"]),
            timings=dict(data.get("timings") or {}),
            buttons=[dict(b) for b in data.get("buttons") or ()],
            reply_to=data.get("reply_to"),
            author=data.get("author"),
        )


def to_json(item: ChannelIdentity | Customer | Conversation | Turn) -> str:
    """Compact JSON for any model object; Chinese text stays readable."""
    return json.dumps(item.to_dict(), ensure_ascii=False, separators=(",", ":"))


def from_json(cls: type[Model], text: str) -> Model:
    """Read an object of ``cls`` written by `to_json`."""
    return cls.from_dict(json.loads(text))
