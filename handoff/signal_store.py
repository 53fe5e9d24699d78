"""Where the escalation policy keeps a conversation's `SignalState` between turns.

``P handoff:signals:{conversation_id}``: a string of JSON, kept 7 days after its last turn.
Written with the bot's turn, in the same step (`handoff.queue.HandoffQueue.commit_turn`);
deleted with a handback (`HandoffQueue.finish`), so that the counts start again (the turns
that led to the first handoff do not trigger a second one at once).
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

    @staticmethod
    def dumps(state: SignalState) -> str:
        """The state as it is kept (the turn's commit script writes it, `handoff.queue`)."""
        return json.dumps(state.to_dict(), ensure_ascii=False, separators=(",", ":"))
