"""The inbox and the outbox streams on a real Redis: a stored turn always has its entry, written in
the same step; the handled mark; takeovers of a dead consumer's entries."""

from __future__ import annotations

import asyncio

from conversations.store import ConversationStore
from conversations.streams import SENDERS, Inbox, TurnStream

PREFIX = "t-streams:"


def run(redis_url, body):
    async def main():
        async with ConversationStore.from_url(redis_url, prefix=PREFIX) as store:
            return await body(store)

    return asyncio.run(main())


async def _conversation(store: ConversationStore, channel: str = "web", who: str = "v1") -> str:
    customer = await store.resolve_customer(channel, who)
    return (await store.current_conversation(customer.id, channel)).id


def test_a_stored_message_is_pending_with_the_replica_that_stored_it_until_handled(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation_id = await _conversation(store)
        stored = await store.append_customer_turn(conversation_id, "hi", "web", "en", "m1", handler="a")
        assert stored.stored and stored.pending and stored.entry_id
        mine, other = Inbox(store.client, store.keys, "a"), Inbox(store.client, store.keys, "b")
        assert [(e.conversation_id, e.seq) for e in await mine.own_pending()] == [(conversation_id, 1)]
        assert await other.own_pending() == [] and await other.orphans() == []  # delivered already
        # A resend is not stored again, and says it still waits to be handled.
        again = await store.append_customer_turn(conversation_id, "hi", "web", "en", "m1", handler="b")
        assert not again.stored and again.pending and again.entry_id is None and again.turn == stored.turn
        # Replica a died: b takes the entry over once it has been idle long enough.
        assert await other.reclaim(min_idle_ms=60_000) == []
        (taken,) = await other.reclaim(min_idle_ms=0)
        assert taken.entry_id == stored.entry_id
        # Handled once: the mark is compare-and-set.
        assert await store.mark_handled(conversation_id, 0, 1)
        assert not await store.mark_handled(conversation_id, 0, 1)
        await other.ack(taken.entry_id)
        assert await other.pending_count() == 0 and await store.client.xlen(store.keys.inbox) == 0
        done = await store.append_customer_turn(conversation_id, "hi", "web", "en", "m1", handler="a")
        assert not done.pending
        conversation = await store.get_conversation(conversation_id)
        assert (conversation.received, conversation.handled, conversation.pending) == (1, 1, False)

    run(redis_url, body)


def test_a_message_recorded_without_a_handler_counts_as_handled_and_makes_no_entry(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation_id = await _conversation(store)
        recorded = await store.append_customer_turn(conversation_id, "imported", "web", "en", "r1")
        assert recorded.stored and not recorded.pending and recorded.entry_id is None
        assert await store.client.xlen(store.keys.inbox) == 0
        # Behind a message still pending, a recorded one does not jump the queue.
        await store.append_customer_turn(conversation_id, "live", "web", "en", "m1", handler="a")
        behind = await store.append_customer_turn(conversation_id, "imported 2", "web", "en", "r2")
        assert behind.pending
        assert (await store.get_conversation(conversation_id)).handled == 1

    run(redis_url, body)


def test_a_conversation_stored_before_the_inbox_counts_its_past_as_handled(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation_id = await _conversation(store)
        await store.append_customer_turn(conversation_id, "old", "web", "en", "o1")
        await store.client.hdel(store.keys.conversation(conversation_id), "received", "handled")  # as before
        stored = await store.append_customer_turn(conversation_id, "new", "web", "en", "n1", handler="a")
        conversation = await store.get_conversation(conversation_id)
        assert (stored.turn.seq, conversation.handled, conversation.received) == (2, 1, 2)

    run(redis_url, body)


def test_replies_to_a_customer_who_last_wrote_on_wechat_go_to_the_wechat_outbox(redis_url):
    async def body(store: ConversationStore) -> None:
        outbox = TurnStream(store.client, store.keys.outbox("wechat"), SENDERS, "a")
        await outbox.ensure_group()
        web = await _conversation(store, "web", "w1")
        await store.append_customer_turn(web, "hello", "web", "en", "m1", handler="a")
        await store.append_bot_turn(web, "hi there")
        assert await outbox.new() == []  # the web page fetches its turns itself
        # The same conversation continued on WeChat (a linked customer): replies follow them there.
        await store.append_customer_turn(web, "我在微信上", "wechat", "zh", "wx-1", handler="a")
        bot = await store.append_bot_turn(web, "好的")
        notice = await store.append_turn(web, "system", "已为您转接", once="n1")
        again = await store.append_turn(web, "system", "已为您转接", once="n1")  # written once
        assert again == notice
        entries = await outbox.new()
        assert [(e.conversation_id, e.seq) for e in entries] == [(web, bot.seq), (web, notice.seq)]
        # A conversation begun on WeChat pushes its replies before any customer turn says so.
        wechat = await _conversation(store, "wechat", "o-1")
        greeting = await store.append_bot_turn(wechat, "欢迎")
        assert [(e.conversation_id, e.seq) for e in await outbox.new()] == [(wechat, greeting.seq)]

    run(redis_url, body)
