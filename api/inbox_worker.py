"""The inbox worker: handles the messages that no live handler is working on.

Normally the replica that stores a message handles it at once (`api.pipeline.TurnPipeline.reply`)
and acknowledges its inbox entry. This worker, one per replica, covers every other case
(`conversations.streams`):

- at start-up, the entries still pending with this replica's own consumer name: what it was
  handling when it died;
- every round, entries pending with any consumer for longer than ``reclaim_idle_ms``: those of a
  replica that died or hangs (handling one twice is harmless, see `api.pipeline`);
- entries never delivered (added while the consumer group did not exist).

Each entry is handled (`TurnPipeline.handle`) and then acknowledged; one that fails stays
pending and is tried again after ``reclaim_idle_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conversations.streams import Inbox, TurnEntry

log = logging.getLogger(__name__)

Handle = Callable[[str, int], Awaitable[object]]


class InboxWorker:
    """Takes over pending inbox entries and handles them.

    Args:
        inbox: this replica's consumer of the inbox.
        handle: handles one conversation's turns up to a seq (`TurnPipeline.handle`).
        reclaim_idle_ms: entries idle this long with another consumer are taken over.
        every_s: how often a round runs.
        concurrency: at most this many entries handled at once.
    """

    def __init__(
        self,
        inbox: Inbox,
        handle: Handle,
        *,
        reclaim_idle_ms: int = 10_000,
        every_s: float = 1.0,
        concurrency: int = 16,
    ) -> None:
        self.inbox = inbox
        self.handle = handle
        self.reclaim_idle_ms = reclaim_idle_ms
        self.every_s = every_s
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self, stop: asyncio.Event) -> None:
        """Handle this replica's own pending entries, then take over stale ones until ``stop`` is set."""
        own = True
        while not stop.is_set():
            try:
                if own:
                    await self.inbox.ensure_group()
                    while entries := await self.inbox.own_pending():
                        if not all(await self.handle_all(entries)):
                            break  # some failed: they are retried when they go stale
                    own = False
                await self.round()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("inbox worker: Redis unavailable (%s); retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.every_s)

    async def round(self) -> int:
        """One pass over orphaned and stale entries; how many were handled."""
        entries = await self.inbox.orphans() + await self.inbox.reclaim(self.reclaim_idle_ms)
        if entries:
            log.info("inbox worker %s: took over %d pending message(s)", self.inbox.consumer, len(entries))
        return sum(await self.handle_all(entries)) if entries else 0

    async def handle_all(self, entries: list[TurnEntry]) -> list[bool]:
        """Handle and acknowledge each entry; True for each that succeeded."""
        return list(await asyncio.gather(*(self._one(entry) for entry in entries)))

    async def _one(self, entry: TurnEntry) -> bool:
        async with self._slots:
            try:
                await self.handle(entry.conversation_id, entry.seq)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "inbox: message %s of %s failed; it stays pending", entry.seq, entry.conversation_id
                )
                return False
            await self.inbox.ack(entry.entry_id)
            return True
