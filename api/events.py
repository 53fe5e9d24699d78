"""Follows every conversation event published in Redis and hands each to whoever listens here.

The store publishes each event (a stored turn, a state change, a new conversation) on the
conversation's pub/sub channel. One pattern subscription per process receives them all,
whichever replica wrote them, and this hub routes each to the listeners of its conversation
or, for a new conversation, of its customer. Pub/sub loses what arrives while nobody listens,
so a listener reads what it missed from the store after subscribing (see
`api.channels.follower`); the hub is only the live part.

It also subscribes to the handoff queue's channel (`handoff.queue`), whose events (a chat
waiting, assigned, closed, an agent going online) go to every agent connection here. Each
event is parsed once, here, into its type (`handoff.events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from handoff.events import AgentPresence, ConversationCreated, Event, parse_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resubscribed:
    """Put in every conversation listener's queue after the subscription was lost and made again
    (Redis restarted): what was published in between is gone, so read it back from the store."""


RESUBSCRIBED = Resubscribed()
Listened = Event | Resubscribed  # what a conversation listener's queue receives


class EventHub:
    """Routes the store's published events to per-conversation and per-customer queues.

    Args:
        client: a ``redis.asyncio.Redis`` (decode_responses=True); the hub opens its own
            pub/sub connection from it.
        pattern: the store's `Keys.events_pattern`.
        handoff_channel: the handoff queue's events channel (None: not followed).
    """

    def __init__(self, client: Redis, pattern: str, handoff_channel: str | None = None) -> None:
        self.client = client
        self.pattern = pattern
        self.handoff_channel = handoff_channel
        self._handoff_listeners: set[asyncio.Queue[Event]] = set()
        self._by_conversation: defaultdict[str, set[asyncio.Queue[Listened]]] = defaultdict(set)
        self._by_customer: defaultdict[str, set[asyncio.Queue[Listened]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Subscribe and start routing; returns once the subscription is in place."""
        self._task = asyncio.create_task(self._run(), name="baton-event-hub")
        await self._ready.wait()

    async def stop(self) -> None:
        """Stop routing and close the subscription."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def listen(
        self,
        queue: asyncio.Queue[Listened],
        conversation_id: str | None = None,
        customer_id: str | None = None,
    ) -> None:
        """Send the events of ``conversation_id`` and the ``created`` events of ``customer_id`` to ``queue``."""
        if conversation_id:
            self._by_conversation[conversation_id].add(queue)
        if customer_id:
            self._by_customer[customer_id].add(queue)

    def listen_handoffs(self, queue: asyncio.Queue[Event]) -> None:
        """Send every handoff queue event to ``queue`` (agents' connections)."""
        self._handoff_listeners.add(queue)

    def forget_handoffs(self, queue: asyncio.Queue[Event]) -> None:
        """Undo `listen_handoffs`."""
        self._handoff_listeners.discard(queue)

    def forget(
        self,
        queue: asyncio.Queue[Listened],
        conversation_id: str | None = None,
        customer_id: str | None = None,
    ) -> None:
        """Undo `listen` for the given ids."""
        for table, key in ((self._by_conversation, conversation_id), (self._by_customer, customer_id)):
            if key and key in table:
                table[key].discard(queue)
                if not table[key]:
                    del table[key]

    async def _run(self) -> None:
        while True:
            try:
                async with self.client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.psubscribe(self.pattern)
                    if self.handoff_channel:
                        await pubsub.subscribe(self.handoff_channel)
                    if self._ready.is_set():  # a resubscription: listeners catch up from the store
                        log.info("event subscription restored")
                        for queue in {q for qs in self._by_conversation.values() for q in qs}:
                            queue.put_nowait(RESUBSCRIBED)
                    self._ready.set()
                    async for message in pubsub.listen():
                        self._route(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis restarted or the connection dropped: listeners catch up from the store
                log.exception("event subscription lost; resubscribing in 1 s")
                await asyncio.sleep(1)

    def _route(self, message: dict[str, Any]) -> None:
        if message.get("type") not in ("pmessage", "message"):
            return
        event = parse_text(message["data"])
        if event is None:
            return
        if message["type"] == "message":  # the handoff channel
            for queue in self._handoff_listeners:
                queue.put_nowait(event)
            return
        if isinstance(event, AgentPresence):
            return  # not a conversation's (and never published there)
        queues = set(self._by_conversation.get(event.conversation_id, ()))
        if isinstance(event, ConversationCreated):
            queues |= self._by_customer.get(event.customer_id, set())
        for queue in queues:
            queue.put_nowait(event)
