"""Follows one customer's conversation for a live connection: every turn once, in order, and state changes.

Used by the web WebSocket and the app's event stream. Live events come from the `EventHub`;
whatever a connection missed (it was offline, pub/sub dropped an event, the first events of
a new conversation went out before anyone listened) is read back from the store, so the
customer sees each turn exactly once and in seq order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from api.events import RESUBSCRIBED, EventHub, Listened, Resubscribed
from conversations.model import Turn
from conversations.store import ConversationStore
from handoff.events import ConversationCreated, StateChanged, TurnStored

log = logging.getLogger(__name__)

PAGE = 100  # turns read from the store at a time
RETRY_SECONDS = 0.5  # after a Redis error, how long before reading the store again


@dataclass(frozen=True)
class StateChange:
    """The conversation moved to ``state`` (e.g. ``queued`` when a person is on the way)."""

    conversation_id: str
    state: str


Item = Turn | StateChange
Sink = Callable[[Item], Awaitable[None]]


class ConversationFollower:
    """Sends a customer's turns and state changes to ``sink``, following them into new conversations.

    Args:
        store: the conversation store.
        hub: the process's event hub.
        customer_id: whose conversations to follow.
        sink: called with each `Turn` and `StateChange`, one at a time, in order.
    """

    def __init__(self, store: ConversationStore, hub: EventHub, customer_id: str, sink: Sink) -> None:
        self.store = store
        self.hub = hub
        self.customer_id = customer_id
        self.sink = sink
        self.conversation_id: str | None = None
        self.last_seq = 0
        self._queue: asyncio.Queue[Listened] = asyncio.Queue()
        self._lock = asyncio.Lock()  # one writer to the sink; keeps seq order
        self._task: asyncio.Task[None] | None = None
        hub.listen(self._queue, customer_id=customer_id)

    async def follow(self, conversation_id: str, after: int = 0) -> None:
        """Follow ``conversation_id`` from seq ``after`` on, sending what is stored after it first."""
        async with self._lock:
            if conversation_id != self.conversation_id:
                self.hub.forget(self._queue, conversation_id=self.conversation_id)
                self.hub.listen(self._queue, conversation_id=conversation_id)  # before reading: no gap
                self.conversation_id, self.last_seq = conversation_id, after
            await self._catch_up()

    async def offer(self, turn: Turn) -> None:
        """Send ``turn`` now if it belongs to the followed conversation (a reply the caller just stored).

        Earlier turns not yet sent go first; a turn already sent is skipped.
        """
        async with self._lock:
            if turn.conversation_id != self.conversation_id or turn.seq <= self.last_seq:
                return
            if turn.seq == self.last_seq + 1:
                await self._send(turn)
            else:
                await self._catch_up()

    def start(self) -> None:
        """Start passing live events to the sink (in a task of its own)."""
        self._task = asyncio.create_task(self._run(), name=f"follow-{self.customer_id}")

    async def close(self) -> None:
        """Stop following."""
        self.hub.forget(self._queue, conversation_id=self.conversation_id, customer_id=self.customer_id)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._route_events()
            except asyncio.CancelledError:
                raise
            except RedisError as exc:  # Redis is restarting: catch up from the store once it is back
                log.warning(
                    "follower of %s: Redis unavailable (%s); catching up shortly", self.customer_id, exc
                )
                await asyncio.sleep(RETRY_SECONDS)
                self._queue.put_nowait(RESUBSCRIBED)
            except Exception:  # the connection went away mid-send: its handler cleans up
                log.debug("follower of %s stopped", self.customer_id, exc_info=True)
                return

    async def _route_events(self) -> None:
        while True:
            event = await self._queue.get()
            if isinstance(event, Resubscribed):
                if self.conversation_id is not None:
                    async with self._lock:
                        await self._catch_up()
            elif isinstance(event, ConversationCreated):
                await self.follow(event.conversation_id)
            elif getattr(event, "conversation_id", None) != self.conversation_id:
                continue
            elif isinstance(event, TurnStored):
                await self.offer(event.turn)
            elif isinstance(event, StateChanged):
                async with self._lock:
                    await self._catch_up()  # turns stored before the change go out before it
                    await self.sink(StateChange(event.conversation_id, event.to_state.value))

    async def _catch_up(self) -> None:
        assert self.conversation_id is not None
        while True:
            turns = await self.store.turns(self.conversation_id, after_seq=self.last_seq, limit=PAGE)
            for turn in turns:
                await self._send(turn)
            if len(turns) < PAGE:
                return

    async def _send(self, turn: Turn) -> None:
        await self.sink(turn)
        self.last_seq = turn.seq
