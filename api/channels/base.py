"""The seam every channel implements: turn what arrives into an `InboundMessage`.

The turn pipeline (`api.pipeline`) knows only these types, so a new channel (WeChat) is one
more adapter, not a change to the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from conversations.model import Turn


@dataclass(frozen=True)
class InboundMessage:
    """A customer's message, as every channel hands it to the pipeline.

    Attributes:
        channel: ``web``, ``app`` or ``wechat``.
        external_id: who wrote it on that channel (visitor id, app user id, openid).
        text: what they wrote, exactly as sent (HTML included: it is shown as text, never run).
        client_message_id: the channel's id of this message; a repeat is answered once.
    """

    channel: str
    external_id: str
    text: str
    client_message_id: str | None = None


def public_turn(turn: Turn) -> dict[str, Any]:
    """A turn as customers' clients see it: no NLU result, no timings (those are for agents)."""
    return {
        "conversation_id": turn.conversation_id,
        "seq": turn.seq,
        "id": turn.id,
        "sender": turn.sender,
        "text": turn.text,
        "language": turn.language,
        "created_at": turn.to_dict()["created_at"],
        "buttons": [dict(b) for b in turn.buttons],
        "client_message_id": turn.client_message_id,
        "reply_to": turn.reply_to,
    }


class ChannelAdapter(Protocol):
    """A channel: it normalises its own inbound format, and says whether its customer can be reached.

    What goes back to the customer is stored first; the web and app clients receive it from the
    store's events (`api.channels.follower`), and WeChat's outbox pushes it through WeChat's API.
    """

    name: str  # the channel name stored on identities and turns

    def normalise(self, external_id: str, payload: Any) -> InboundMessage:
        """The `InboundMessage` for ``payload`` received from ``external_id``.

        Raises:
            api.errors.ApiError: the payload is not a message this channel accepts.
        """

    async def reachable(self, conversation_id: str) -> bool:
        """False when a message written now could not reach the conversation's customer (WeChat's
        48-hour window has closed); channels that keep messages for the customer say True."""
