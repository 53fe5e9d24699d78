"""The assigner: the worker that admits new handoffs and routes waiting ones to agents.

Each round (`Assigner.step`):

1. XAUTOCLAIM entries of the handoff stream left pending by a consumer that died (idle longer
   than ``reclaim_idle_ms``), so a crash between reading and acknowledging loses nothing;
2. XREADGROUP new entries;
3. admit each (new -> waiting; idempotent, so admitting twice after a crash is harmless) and
   only then XACK it (and XDEL it: the stream only holds work not yet done);
4. `HandoffQueue.match`: assign waiting handoffs to agents with room (not under broadcast routing);
5. `HandoffQueue.check_breaches`.

Any number of assigners may run at once on one Redis, in one process or many, each with its
own consumer name: the consumer group hands each entry to one of them, and every assignment
is an atomic claim, so they never assign one handoff twice. `Assigner.run` loops rounds, wakes
early when an agent comes online, a chat is freed or queued (events on the handoff channel),
and calls `HandoffQueue.reconcile` when it starts and now and then (for work a crash cut short).

Run one on its own with ``python -m handoff.assigner --redis-url URL --prefix P --consumer NAME``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from handoff.desk import HandoffDesk
from handoff.keys import DEFAULT_PREFIX, GROUP
from handoff.metrics import Metrics
from handoff.queue import ROUTINGS, HandoffQueue
from handoff.records import Records
from handoff.signal_store import SignalStore
from knowledge_index.handoff_file import HandoffConfig

log = logging.getLogger(__name__)

# Events after which a round may assign something: a new chat, an agent with room.
WAKE_EVENTS = frozenset({"queued", "agent_online", "closed", "transferred"})


class Assigner:
    """One consumer of the handoff stream that admits, assigns and watches first-response times.

    Args:
        queue: the handoff queue (its client is used for the stream too).
        consumer: this worker's name in the consumer group; unique per running worker.
        block_ms: how long a round waits for new entries (and `run` for a wake-up event).
        reclaim_idle_ms: entries pending this long with another consumer are taken over.
        batch: at most this many stream entries per round.
        delay_ms: for fault tests only: sleep this long between the steps of one assignment
            (after reading, after admitting, before claiming, after the claim script) so a
            test can kill the worker half-way.
        reconcile_every_s: how often `run` repairs half-finished work (besides at start).
    """

    def __init__(
        self,
        queue: HandoffQueue,
        consumer: str,
        *,
        block_ms: int = 500,
        reclaim_idle_ms: int = 5000,
        batch: int = 100,
        delay_ms: int = 0,
        reconcile_every_s: float = 60.0,
    ) -> None:
        if not consumer:
            raise ValueError("an assigner needs a consumer name")
        self.queue = queue
        self.consumer = consumer
        self.block_ms = block_ms
        self.reclaim_idle_ms = reclaim_idle_ms
        self.batch = batch
        self.delay_ms = delay_ms
        self.reconcile_every_s = reconcile_every_s
        self._reclaim_from = "0-0"  # XAUTOCLAIM's cursor, kept between rounds
        if delay_ms > 0:
            queue.pause = self._pause

    async def step(self, *, block: bool = True) -> int:
        """One round; returns how many handoffs it assigned.

        ``block`` False reads the stream without waiting (as `run` does; it waits on events).
        """
        await self.queue.ensure_group()
        entries = await self._read(block)
        for entry_id, handoff_id in entries:
            if handoff_id:
                await self.queue.admit(handoff_id)
                await self._pause("after_admit")
            await self._ack(entry_id)  # only now: a crash before this leaves the entry pending
        assigned = await self.queue.match()
        await self.queue.check_breaches()
        if assigned:
            log.info("%s assigned %d handoff(s)", self.consumer, len(assigned))
        return len(assigned)

    async def run(self, stop: asyncio.Event) -> None:
        """Loop rounds until ``stop`` is set; Redis outages are logged and retried."""
        wake = asyncio.Event()
        listener = asyncio.create_task(self._listen(wake), name=f"assigner-{self.consumer}-events")
        next_reconcile = 0.0  # at once: finish what a crashed worker left half done
        try:
            while not stop.is_set():
                wake.clear()  # before the round: an event during it triggers the next one
                try:
                    if time.monotonic() >= next_reconcile:
                        # At start nothing else of ours is in flight; later, leave recent changes alone.
                        min_age = 0.0 if next_reconcile == 0.0 else 10.0
                        repairs = await self.queue.reconcile(min_age_seconds=min_age)
                        if repairs:
                            log.info("%s reconciled %d half-finished change(s)", self.consumer, repairs)
                        next_reconcile = time.monotonic() + self.reconcile_every_s
                    await self.step(block=False)
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    log.warning("%s: Redis unavailable (%s); retrying", self.consumer, exc)
                await _first_of(stop, wake, timeout=self.block_ms / 1000)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    # -- internals ---------------------------------------------------------------------------

    async def _read(self, block: bool) -> list[tuple[str, str | None]]:
        """Entries to admit: stale ones of dead consumers first, then new ones."""
        client, stream = self.queue.client, self.queue.keys.stream
        try:
            reply = await client.xautoclaim(
                stream, GROUP, self.consumer, self.reclaim_idle_ms, self._reclaim_from, count=self.batch
            )
            self._reclaim_from = reply[0]
            entries: list[tuple[str, str | None]] = [
                (entry_id, (fields or {}).get("handoff_id")) for entry_id, fields in reply[1] if entry_id
            ]
            if entries:
                log.info("%s took over %d pending entr(ies) of another consumer", self.consumer, len(entries))
            room = self.batch - len(entries)
            if room > 0:
                wait = self.block_ms if block and not entries else None
                replies = await client.xreadgroup(GROUP, self.consumer, {stream: ">"}, count=room, block=wait)
                for _stream, items in replies or []:
                    entries += [(entry_id, fields.get("handoff_id")) for entry_id, fields in items]
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.queue.forget_group()  # the stream was deleted (a flushed database): create it again
            return []
        if entries:
            await self._pause("after_read")
        return entries

    async def _ack(self, entry_id: str) -> None:
        client, stream = self.queue.client, self.queue.keys.stream
        async with client.pipeline(transaction=True) as pipe:
            pipe.xack(stream, GROUP, entry_id)
            pipe.xdel(stream, entry_id)  # done with: the stream holds only work not yet admitted
            await pipe.execute()

    async def _pause(self, point: str) -> None:
        if self.delay_ms > 0:
            log.debug("%s: pause %s", self.consumer, point)
            await asyncio.sleep(self.delay_ms / 1000)

    async def _listen(self, wake: asyncio.Event) -> None:
        """Set ``wake`` on events after which a round may assign something; resubscribe on errors."""
        while True:
            try:
                async with self.queue.client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.queue.keys.events)
                    async for message in pubsub.listen():
                        if _event_type(message) in WAKE_EVENTS:
                            wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the round's timeout still runs rounds meanwhile
                log.warning("%s: event subscription lost (%s); resubscribing in 1 s", self.consumer, exc)
                await asyncio.sleep(1)


def _event_type(message: dict[str, Any]) -> str | None:
    if message.get("type") != "message":
        return None
    try:
        event = json.loads(message["data"])
    except (TypeError, ValueError):
        return None
    return event.get("type") if isinstance(event, dict) else None


async def _first_of(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    """Return when ``stop`` or ``wake`` is set, or after ``timeout`` seconds."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m handoff.assigner``."""
    parser = argparse.ArgumentParser(
        prog="python -m handoff.assigner",
        description="Run one handoff assigner until SIGTERM or SIGINT.",
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="Redis key prefix (default %(default)s)")
    parser.add_argument(
        "--consumer",
        default=f"{socket.gethostname()}:{os.getpid()}",
        help="this worker's name in the consumer group; unique per running worker",
    )
    parser.add_argument("--block-ms", type=int, default=500, help="longest wait between rounds")
    parser.add_argument(
        "--reclaim-idle-ms",
        type=int,
        default=5000,
        help="take over stream entries pending this long with another (dead) consumer",
    )
    parser.add_argument("--batch", type=int, default=100, help="stream entries per round")
    parser.add_argument(
        "--delay-ms",
        type=int,
        default=0,
        help="FOR FAULT TESTS ONLY: sleep this long between the steps of one assignment",
    )
    parser.add_argument(
        "--routing",
        choices=ROUTINGS,
        default=os.environ.get("BATON_ROUTING", "assign"),
        help="assign: route waiting chats to agents; broadcast: leave them for agents to accept"
        " (must match the service's BATON_ROUTING; default %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with HandoffQueue.from_url(args.redis_url, prefix=args.prefix, routing=args.routing) as queue:
        _tell_and_count(queue, args.prefix)
        assigner = Assigner(
            queue,
            args.consumer,
            block_ms=args.block_ms,
            reclaim_idle_ms=args.reclaim_idle_ms,
            batch=args.batch,
            delay_ms=args.delay_ms,
        )
        log.info("assigner %s started on prefix %r", args.consumer, args.prefix)
        await assigner.run(stop)
        log.info("assigner %s stopped", args.consumer)


def _tell_and_count(queue: HandoffQueue, prefix: str) -> None:
    """Do what `baton serve` does after an assignment or a breach here too: tell the customer an
    agent joined, count the wait and the breaches (`HandoffDesk.follow_queue`)."""
    client = queue.client
    HandoffDesk(
        queue.store,
        queue,
        queue.agents,
        Metrics(client, prefix),
        Records(client, prefix),
        SignalStore(client, prefix),
        HandoffConfig(),
    ).follow_queue()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m handoff.assigner``."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
