"""Where the escalation policy keeps a conversation's `SignalState` between turns.

``P handoff:signals:{conversation_id}``: a string of JSON, kept 7 days after its last turn.
Deleted when an agent hands the conversation back to the bot, so that the counts start
again (the turns that led to the first handoff do not trigger a second one at once).
"""

from __future__ import annotations

import json

from redis.asyncio import Redis

from conversations.keys import DEFAULT_PREFIX
from handoff.signals import SignalState

KEPT_SECONDS = 7 * 86400


class SignalStore:
    """Reads and writes `SignalState` per conversation."""

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix

    def key(self, conversation_id: str) -> str:
        """The Redis key of ``conversation_id``'s state."""
        return f"{self.prefix}handoff:signals:{conversation_id}"

    async def load(self, conversation_id: str) -> SignalState:
        """The state, fresh when there is none."""
        text = await self.client.get(self.key(conversation_id))
        return SignalState.from_dict(json.loads(text) if text else None)

    async def save(self, conversation_id: str, state: SignalState) -> None:
        """Store the state."""
        text = json.dumps(state.to_dict(), ensure_ascii=False, separators=(",", ":"))
        await self.client.set(self.key(conversation_id), text, ex=KEPT_SECONDS)

    async def reset(self, conversation_id: str) -> None:
        """Forget the state (after a handback)."""
        await self.client.delete(self.key(conversation_id))
