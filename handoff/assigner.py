"""The assigner: the one owner of admission to the queue, and the router of waiting handoffs.

Each round (`Assigner.step`):

1. XAUTOCLAIM entries of the handoff stream left pending by a consumer that died (idle longer
   than ``reclaim_idle_ms``), so a crash between reading and acknowledging loses nothing;
2. XREADGROUP new entries;
3. admit each (new -> waiting; idempotent, so admitting twice after a crash is harmless);
4. `handoff.routing.match`: assign waiting handoffs to agents with room (not under broadcast
   routing); each assignment tells the customer an agent joined, in the same step;
5. tell each admitted customer still waiting where they stand (once per handoff, however often
   a crash makes this step run), and only then XACK the entry (and XDEL it: the stream only
   holds work not yet done);
6. `HandoffQueue.check_breaches`.

Any number of assigners may run at once on one Redis, in one process or many, each with its
own consumer name: the consumer group hands each entry to one of them, and every assignment
is an atomic claim, so they never assign one handoff twice. `Assigner.run` loops rounds and
wakes early when an agent comes online, a chat is freed or queued (events on the handoff
channel). Every change of hands is one script (`handoff.queue`), so there is nothing to repair.

Run one on its own with ``python -m handoff.assigner --kb DIR --redis-url URL --prefix P
--consumer NAME`` (``--kb`` for the knowledge base's ``handoff.yml``, as ``baton serve`` reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
from pathlib import Path

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conversations import failpoints
from conversations.store import ConversationStore
from handoff.desk import HandoffDesk
from handoff.events import AgentPresence, Event, HandoffChanged, parse_text
from handoff.handoffs import ROUTINGS
from handoff.keys import DEFAULT_PREFIX, GROUP
from handoff.parts import build_handoff
from handoff.routing import match
from knowledge_index.handoff_file import HandoffConfig, load_handoff_config

log = logging.getLogger(__name__)

# Handoff events after which a round may assign something: a new chat, a freed slot (and an
# agent coming online, `AgentPresence`).
WAKE_KINDS = frozenset({"queued", "closed", "transferred"})


class Assigner:
    """One consumer of the handoff stream that admits, assigns and watches first-response times.

    Args:
        desk: the handoff desk (its queue's client is used for the stream too).
        consumer: this worker's name in the consumer group; unique per running worker.
        block_ms: how long a round waits for new entries (and `run` for a wake-up event).
        reclaim_idle_ms: entries pending this long with another consumer are taken over.
        batch: at most this many stream entries per round.
        delay_ms: for fault tests only: sleep this long between the steps of one assignment
            (after reading, after admitting, before claiming, before acknowledging) so a test
            can kill the worker half-way.
    """

    def __init__(
        self,
        desk: HandoffDesk,
        consumer: str,
        *,
        block_ms: int = 500,
        reclaim_idle_ms: int = 5000,
        batch: int = 100,
        delay_ms: int = 0,
    ) -> None:
        if not consumer:
            raise ValueError("an assigner needs a consumer name")
        self.desk = desk
        self.queue = desk.queue
        self.consumer = consumer
        self.block_ms = block_ms
        self.reclaim_idle_ms = reclaim_idle_ms
        self.batch = batch
        self.delay_ms = delay_ms
        self._reclaim_from = "0-0"  # XAUTOCLAIM's cursor, kept between rounds

    async def step(self, *, block: bool = True) -> int:
        """One round; returns how many handoffs it assigned.

        ``block`` False reads the stream without waiting (as `run` does; it waits on events).
        """
        await self.queue.ensure_group()
        entries = await self._read(block)
        for _entry_id, handoff_id in entries:
            if handoff_id:
                await self.queue.admit(handoff_id)
                await self._pause("after_admit")
        if entries:
            failpoints.reach("admitted")
        assigned = await match(self.queue, pause=self._pause if self.delay_ms > 0 else None)
        if entries:
            failpoints.reach("claimed")
        for entry_id, handoff_id in entries:
            if handoff_id:
                await self.desk.tell_standing(handoff_id)  # nothing if an agent has it already
            await self._pause("before_ack")
            await self._ack(entry_id)  # only now: a crash before this leaves the entry pending
        await self.queue.check_breaches()
        if assigned:
            log.info("%s assigned %d handoff(s)", self.consumer, len(assigned))
        return len(assigned)

    async def run(self, stop: asyncio.Event) -> None:
        """Loop rounds until ``stop`` is set; Redis outages are logged and retried."""
        wake = asyncio.Event()
        listener = asyncio.create_task(self._listen(wake), name=f"assigner-{self.consumer}-events")
        try:
            while not stop.is_set():
                wake.clear()  # before the round: an event during it triggers the next one
                try:
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
                        if message.get("type") == "message" and _wakes(parse_text(message["data"])):
                            wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the round's timeout still runs rounds meanwhile
                log.warning("%s: event subscription lost (%s); resubscribing in 1 s", self.consumer, exc)
                await asyncio.sleep(1)


def _wakes(event: Event | None) -> bool:
    """True for an event after which a round may assign something."""
    if isinstance(event, HandoffChanged):
        return event.kind in WAKE_KINDS
    return isinstance(event, AgentPresence) and event.online


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
    parser.add_argument(
        "--kb",
        type=Path,
        help="the knowledge base folder whose handoff.yml to follow (as baton serve --kb); default: defaults",
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--prefix",
        default=os.environ.get("BATON_REDIS_PREFIX", DEFAULT_PREFIX),
        help="Redis key prefix, as the service's BATON_REDIS_PREFIX (default %(default)s)",
    )
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
    config = load_handoff_config(args.kb) if args.kb else HandoffConfig()
    async with ConversationStore.from_url(args.redis_url, prefix=args.prefix) as store:
        desk = build_handoff(store.client, store, config, routing=args.routing)
        assigner = Assigner(
            desk,
            args.consumer,
            block_ms=args.block_ms,
            reclaim_idle_ms=args.reclaim_idle_ms,
            batch=args.batch,
            delay_ms=args.delay_ms,
        )
        log.info("assigner %s started on prefix %r", args.consumer, args.prefix)
        await assigner.run(stop)
        log.info("assigner %s stopped", args.consumer)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m handoff.assigner``."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
