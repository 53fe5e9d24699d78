"""The inbox: every stored customer turn until it is handled, as a Redis stream with a consumer group.

Storing a customer turn and adding its entry (``conversation_id``, ``seq``) to ``P inbox`` is
one Lua script (`conversations.scripts`), which also delivers the entry to the stream's
consumer group ``handlers`` under the name of the replica that stored it: the entry is then
*pending* with that replica, which handles the message at once. Only when the message is
handled (its conversation's ``handled`` mark has reached its seq) is the entry acknowledged and
deleted. So a message whose replica died before handling it stays pending, and is taken over:
by the same replica after a restart (`own_pending`, its consumer name is stable), or by any
replica once it has been idle for a while (`reclaim`, ``XAUTOCLAIM``). Handling the same entry
twice is harmless: the handled mark is compare-and-set, so each message's effects happen once.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from conversations.keys import Keys

GROUP = "handlers"  # the consumer group; conversations.scripts names it too


@dataclass(frozen=True)
class InboxEntry:
    """One customer turn waiting to be handled."""

    entry_id: str
    conversation_id: str
    seq: int


class Inbox:
    """Reads and acknowledges the inbox stream for one consumer (a running replica).

    Args:
        client: a ``redis.asyncio.Redis`` made with ``decode_responses=True``.
        keys: the store's key names.
        consumer: this replica's name in the group: stable across restarts, unique among replicas.
    """

    def __init__(self, client: Redis, keys: Keys, consumer: str) -> None:
        if not consumer:
            raise ValueError("an inbox consumer needs a name")
        self.client = client
        self.stream = keys.inbox
        self.consumer = consumer
        self._reclaim_from = "0-0"  # XAUTOCLAIM's cursor, kept between calls

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing."""
        try:
            await self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def own_pending(self, count: int = 100) -> list[InboxEntry]:
        """Entries delivered to this consumer and not acknowledged: what it was handling when it
        stopped (read at start-up), or whatever was delivered with one of its own messages."""
        return await self._read("0", count)

    async def orphans(self, count: int = 100) -> list[InboxEntry]:
        """Entries never delivered to anyone (added while the group did not exist); normally none."""
        return await self._read(">", count)

    async def reclaim(self, min_idle_ms: int, count: int = 100) -> list[InboxEntry]:
        """Take over entries pending with any consumer for at least ``min_idle_ms`` (a dead replica's)."""
        try:
            reply = await self.client.xautoclaim(
                self.stream, GROUP, self.consumer, min_idle_ms, self._reclaim_from, count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        self._reclaim_from = reply[0]
        return [_entry(entry_id, fields) for entry_id, fields in reply[1] if entry_id and fields]

    async def ack(self, entry_id: str) -> None:
        """The entry's message is handled: acknowledge it and delete it (the stream holds only work)."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, GROUP, entry_id)
            pipe.xdel(self.stream, entry_id)
            await pipe.execute()

    async def pending_count(self) -> int:
        """How many entries are pending with any consumer (for stats and tests)."""
        try:
            summary = await self.client.xpending(self.stream, GROUP)
        except ResponseError:
            return 0
        return int(summary["pending"])

    async def _read(self, start: str, count: int) -> list[InboxEntry]:
        try:
            replies = await self.client.xreadgroup(GROUP, self.consumer, {self.stream: start}, count=count)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        return [
            _entry(entry_id, fields)
            for _stream, items in replies or []
            for entry_id, fields in items
            if fields
        ]


def _entry(entry_id: str, fields: dict[str, str]) -> InboxEntry:
    return InboxEntry(entry_id, fields["conversation_id"], int(fields["seq"]))
