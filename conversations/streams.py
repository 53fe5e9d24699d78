"""Work that must not be lost, as Redis streams of turns with a consumer group: the inbox and the outboxes.

Each entry names one turn (``conversation_id``, ``seq``) and is added in the same Lua script that
stores the turn (`conversations.scripts`), so a stored turn always has its entry. A consumer (a
running replica, under a name that stays the same across restarts) reads entries, does the work,
and only then acknowledges and deletes the entry. An entry whose consumer died stays *pending*:
the same replica takes it up again after a restart (`TurnStream.own_pending`), or any replica
once it has been idle for a while (`TurnStream.reclaim`, ``XAUTOCLAIM``). So the work is done at
least once; each user of a stream makes doing it twice harmless.

- `Inbox`, ``P inbox``, group ``handlers``: every stored customer turn until it is handled. The
  script that stores the turn also delivers its entry to the replica that stored it, which handles
  the message at once (`api.pipeline`); the handled mark is compare-and-set, so each message's
  effects happen once.
- ``P outbox:{channel}``, group ``senders``: every turn Baton wrote for a customer who last wrote
  on a channel whose replies are pushed (WeChat), until it is sent (`api.channels.wechat_outbox`).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from conversations.keys import Keys

GROUP = "handlers"  # the inbox's consumer group; conversations.scripts names it too
SENDERS = "senders"  # the outboxes' consumer group


@dataclass(frozen=True)
class TurnEntry:
    """One turn waiting for its work."""

    entry_id: str
    conversation_id: str
    seq: int


class TurnStream:
    """Reads and acknowledges one stream of turns for one consumer.

    Args:
        client: a ``redis.asyncio.Redis`` made with ``decode_responses=True``.
        stream: the stream's key.
        group: the consumer group.
        consumer: this replica's name in the group: stable across restarts, unique among replicas.
    """

    def __init__(self, client: Redis, stream: str, group: str, consumer: str) -> None:
        if not consumer:
            raise ValueError("a stream consumer needs a name")
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._reclaim_from = "0-0"  # XAUTOCLAIM's cursor, kept between calls

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing."""
        try:
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def own_pending(self, count: int = 100) -> list[TurnEntry]:
        """Entries delivered to this consumer and not acknowledged: what it was working on when it
        stopped (read at start-up)."""
        return await self._read("0", count, None)

    async def new(self, count: int = 100, block_ms: int | None = None) -> list[TurnEntry]:
        """Entries not delivered to anyone yet, waiting up to ``block_ms`` for some (None: no wait)."""
        return await self._read(">", count, block_ms)

    async def reclaim(self, min_idle_ms: int, count: int = 100) -> list[TurnEntry]:
        """Take over entries pending with any consumer for at least ``min_idle_ms`` (a dead replica's)."""
        try:
            reply = await self.client.xautoclaim(
                self.stream, self.group, self.consumer, min_idle_ms, self._reclaim_from, count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        self._reclaim_from = reply[0]
        return [_entry(entry_id, fields) for entry_id, fields in reply[1] if entry_id and fields]

    async def ack(self, entry_id: str) -> None:
        """The entry's work is done: acknowledge it and delete it (the stream holds only work)."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, entry_id)
            pipe.xdel(self.stream, entry_id)
            await pipe.execute()

    async def pending_count(self) -> int:
        """How many entries are pending with any consumer."""
        try:
            summary = await self.client.xpending(self.stream, self.group)
        except ResponseError:
            return 0
        return int(summary["pending"])

    async def _read(self, start: str, count: int, block_ms: int | None) -> list[TurnEntry]:
        try:
            replies = await self.client.xreadgroup(
                self.group, self.consumer, {self.stream: start}, count=count, block=block_ms
            )
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


class Inbox(TurnStream):
    """The inbox: every stored customer turn until it is handled (see the module docstring).

    Entries arrive already delivered to the replica that stored them; `orphans` are the rare ones
    added while the consumer group did not exist.
    """

    def __init__(self, client: Redis, keys: Keys, consumer: str) -> None:
        super().__init__(client, keys.inbox, GROUP, consumer)

    async def orphans(self, count: int = 100) -> list[TurnEntry]:
        """Entries never delivered to anyone (added while the group did not exist); normally none."""
        return await self.new(count)


def _entry(entry_id: str, fields: dict[str, str]) -> TurnEntry:
    return TurnEntry(entry_id, fields["conversation_id"], int(fields["seq"]))
