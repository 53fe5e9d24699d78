"""Agents' internal notes and customers' ratings, per conversation.

========================================  ======  ==================================================
key                                       type    holds
========================================  ======  ==================================================
``P handoff:notes:{conversation_id}``     list    note JSON: agent_id, text, at (epoch seconds)
``P handoff:ratings``                     hash    conversation id -> score 1-5 (set once)
========================================  ======  ==================================================

Notes are for agents only: they are never turns, so no channel ever delivers them to the customer.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from conversations.keys import DEFAULT_PREFIX

MAX_NOTE_CHARS = 4000


class Records:
    """Internal notes and ratings."""

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix

    def _notes(self, conversation_id: str) -> str:
        return f"{self.prefix}handoff:notes:{conversation_id}"

    async def add_note(self, conversation_id: str, agent_id: str, text: str) -> dict[str, Any]:
        """Store an internal note; returns it.

        Raises:
            ValueError: the text is empty or longer than `MAX_NOTE_CHARS`.
        """
        if not text.strip():
            raise ValueError("a note must not be empty")
        if len(text) > MAX_NOTE_CHARS:
            raise ValueError(f"a note has at most {MAX_NOTE_CHARS} characters")
        note = {"conversation_id": conversation_id, "agent_id": agent_id, "text": text, "at": time.time()}
        await self.client.rpush(self._notes(conversation_id), json.dumps(note, ensure_ascii=False))
        return note

    async def notes(self, conversation_id: str) -> list[dict[str, Any]]:
        """Every note of the conversation, oldest first."""
        return [json.loads(n) for n in await self.client.lrange(self._notes(conversation_id), 0, -1)]

    async def rate(self, conversation_id: str, score: int) -> bool:
        """Record the customer's rating once; False if the conversation was rated already.

        Raises:
            ValueError: ``score`` is not 1-5.
        """
        if score not in range(1, 6):
            raise ValueError("a rating is a whole number from 1 to 5")
        return bool(await self.client.hsetnx(f"{self.prefix}handoff:ratings", conversation_id, score))

    async def rating(self, conversation_id: str) -> int | None:
        """The conversation's rating, None if it has none."""
        score = await self.client.hget(f"{self.prefix}handoff:ratings", conversation_id)
        return int(score) if score else None
