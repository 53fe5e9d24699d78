"""The inbox worker on a real Redis: it finishes this replica's own pending messages at start, takes
over a dead replica's once they are stale, and leaves one that keeps failing for later instead of
retrying it in a loop."""

from __future__ import annotations

import asyncio

from api.inbox_worker import InboxWorker
from conversations.store import ConversationStore
from conversations.streams import Inbox

PREFIX = "t-inbox-worker:"


async def _pending(store: ConversationStore, who: str, handler: str) -> str:
    customer = await store.resolve_customer("web", who)
    conversation = await store.current_conversation(customer.id, "web")
    await store.append_customer_turn(conversation.id, "hello", "web", "en", "m1", handler=handler)
    return conversation.id


async def _run_for(worker: InboxWorker, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, timeout=10)


def test_own_pending_messages_at_start_and_a_dead_replicas_once_stale(redis_url):
    async def main() -> None:
        async with ConversationStore.from_url(redis_url, prefix=PREFIX) as store:
            mine = await _pending(store, "v1", "me")
            theirs = await _pending(store, "v2", "dead")
            handled: list[tuple[str, int]] = []

            async def handle(conversation_id: str, seq: int) -> None:
                handled.append((conversation_id, seq))

            inbox = Inbox(store.client, store.keys, "me")
            await _run_for(InboxWorker(inbox, handle, reclaim_idle_ms=60_000, every_s=0.05), 0.5)
            assert handled == [(mine, 1)]  # the dead replica's is not stale yet
            await _run_for(InboxWorker(inbox, handle, reclaim_idle_ms=0, every_s=0.05), 0.5)
            assert handled == [(mine, 1), (theirs, 1)]
            assert await inbox.pending_count() == 0

    asyncio.run(main())


def test_a_message_that_keeps_failing_is_left_for_later_not_retried_in_a_loop(redis_url):
    async def main() -> None:
        async with ConversationStore.from_url(redis_url, prefix=PREFIX) as store:
            await _pending(store, "v3", "me")
            calls = 0

            async def handle(conversation_id: str, seq: int) -> None:
                nonlocal calls
                calls += 1
                raise RuntimeError("a bug")

            inbox = Inbox(store.client, store.keys, "me")
            await _run_for(InboxWorker(inbox, handle, reclaim_idle_ms=60_000, every_s=0.05), 0.5)
            assert calls == 1  # tried once at start; again only when it goes stale
            assert await inbox.pending_count() == 1  # kept, not acknowledged

    asyncio.run(main())
