"""One customer across channels: linking verified phone numbers and member ids, merging histories."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conversations.states import State
from conversations.store import ConversationStore, CustomerNotFound

PHONE = "+8613800138000"


def run(url: str, body: Callable[[ConversationStore], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with ConversationStore.from_url(url) as store:
            return await body(store)

    return asyncio.run(main())


async def customer_with_history(store: ConversationStore, channel: str, external_id: str, *texts: str):
    customer = await store.resolve_customer(channel, external_id)
    conversation = await store.current_conversation(customer.id, channel, "en")
    for n, text in enumerate(texts):
        await store.append_customer_turn(conversation.id, text, channel, "en", f"{external_id}-{n}")
    return customer, conversation


def test_linking_a_first_phone_keeps_the_customer(redis_url):
    async def body(store: ConversationStore) -> None:
        customer = await store.resolve_customer("web", "v1")
        linked = await store.link(customer.id, "phone", PHONE)
        assert linked == customer
        assert await store.client.get(store.keys.link("phone", PHONE)) == customer.id

    run(redis_url, body)


def test_web_and_app_merge_into_the_customer_that_held_the_phone(redis_url):
    async def body(store: ConversationStore) -> None:
        web, web_chat = await customer_with_history(store, "web", "visitor-9", "where is my order?")
        await store.transition(web_chat.id, State.RESOLVED)
        await store.link(web.id, "phone", PHONE)
        app, app_chat = await customer_with_history(store, "app", "user-42", "hi", "refund please")

        survivor = await store.link(app.id, "phone", PHONE)

        assert survivor.id == web.id
        # both channel identities now resolve to the one customer
        assert (await store.resolve_customer("web", "visitor-9")).id == web.id
        assert (await store.resolve_customer("app", "user-42")).id == web.id
        identities = await store.customer_identities(web.id)
        assert [(i.channel, i.external_id) for i in identities] == [("app", "user-42"), ("web", "visitor-9")]
        # one history holding both, oldest first, every conversation owned by the survivor
        history = await store.customer_conversations(web.id)
        assert [c.id for c in history] == [web_chat.id, app_chat.id]
        assert {c.customer_id for c in history} == {web.id}
        assert [t.text for t in await store.turns(app_chat.id)] == ["hi", "refund please"]
        # the merged id is an alias: old holders of it reach the survivor
        assert await store.get_customer(app.id) == await store.get_customer(web.id)
        assert [c.id for c in await store.customer_conversations(app.id)] == [web_chat.id, app_chat.id]
        current = await store.current_conversation(app.id, "app")
        assert current.id == app_chat.id and current.customer_id == web.id
        # no keys of the merged customer are left but its tombstone
        assert await store.client.keys(store.keys.customer(app.id) + "*") == [store.keys.customer(app.id)]

    run(redis_url, body)


def test_linking_is_idempotent_from_either_side(redis_url):
    async def body(store: ConversationStore) -> None:
        a, _ = await customer_with_history(store, "web", "a", "one")
        b, _ = await customer_with_history(store, "app", "b", "two")
        await store.link(a.id, "member_id", "M-1001")
        first = await store.link(b.id, "member_id", "M-1001")
        snapshot = {key: await store.client.type(key) for key in await store.client.keys("*")}
        history = await store.customer_conversations(a.id)
        for customer_id in (a.id, b.id, a.id):
            again = await store.link(customer_id, "member_id", "M-1001")
            assert again == first
        assert {key: await store.client.type(key) for key in await store.client.keys("*")} == snapshot
        assert await store.customer_conversations(a.id) == history

    run(redis_url, body)


def test_a_person_involved_conversation_stays_current_and_the_bot_one_is_resolved(redis_url):
    async def body(store: ConversationStore) -> None:
        holder, holder_chat = await customer_with_history(store, "web", "w", "I want a person")
        await store.transition(holder_chat.id, State.QUEUED, reason="explicit_request")
        await store.link(holder.id, "phone", PHONE)
        newcomer, newcomer_chat = await customer_with_history(store, "app", "a", "hello again")  # newer

        await store.link(newcomer.id, "phone", PHONE)

        current = await store.current_conversation(holder.id, "app")
        assert current.id == holder_chat.id and current.state is State.QUEUED
        displaced = await store.get_conversation(newcomer_chat.id)
        assert displaced is not None and displaced.state is State.RESOLVED
        _id, event = (await store.events(newcomer_chat.id))[-1]
        assert (event["type"], event["from"], event["to"], event["reason"]) == (
            "transition",
            "bot",
            "resolved",
            "merged",
        )
        open_ones = [c for c in await store.customer_conversations(holder.id) if c.is_open]
        assert [c.id for c in open_ones] == [holder_chat.id]

    run(redis_url, body)


def test_of_two_bot_conversations_the_more_recent_stays_current(redis_url):
    async def body(store: ConversationStore) -> None:
        newer_holder, _ = await customer_with_history(store, "app", "a", "old")
        older, older_chat = await customer_with_history(store, "web", "w", "older")
        newest_chat = await store.current_conversation(newer_holder.id, "app")
        await store.append_customer_turn(newest_chat.id, "latest message", "app", "en", "late")
        await store.link(newer_holder.id, "member_id", "M-7")

        survivor = await store.link(older.id, "member_id", "M-7")

        assert survivor.id == newer_holder.id
        assert (await store.current_conversation(survivor.id, "web")).id == newest_chat.id
        resolved = await store.get_conversation(older_chat.id)
        assert resolved is not None and resolved.state is State.RESOLVED

    run(redis_url, body)


def test_two_conversations_with_agents_are_both_left_open(redis_url):
    async def body(store: ConversationStore) -> None:
        a, a_chat = await customer_with_history(store, "web", "w", "agent please")
        b, b_chat = await customer_with_history(store, "app", "a", "agent please")
        for chat in (a_chat, b_chat):
            await store.transition(chat.id, State.QUEUED, reason="explicit_request")
        await store.transition(b_chat.id, State.ASSIGNED)  # b's is updated last
        await store.link(a.id, "phone", PHONE)

        await store.link(b.id, "phone", PHONE)

        states = {c.id: c.state for c in await store.customer_conversations(a.id)}
        assert states == {a_chat.id: State.QUEUED, b_chat.id: State.ASSIGNED}
        assert (await store.current_conversation(a.id, "web")).id == b_chat.id

    run(redis_url, body)


def test_tier_and_name_survive_a_merge(redis_url):
    async def body(store: ConversationStore) -> None:
        plain = await store.resolve_customer("web", "w")
        vip = await store.resolve_customer("app", "a", tier="vip", display_name="Ada")
        await store.link(plain.id, "phone", PHONE)
        survivor = await store.link(vip.id, "phone", PHONE)
        assert (survivor.id, survivor.tier, survivor.display_name) == (plain.id, "vip", "Ada")

    run(redis_url, body)


def test_merges_chain_and_stale_ids_still_link(redis_url):
    async def body(store: ConversationStore) -> None:
        web, web_chat = await customer_with_history(store, "web", "w", "a")
        app, app_chat = await customer_with_history(store, "app", "a", "b")
        wechat, wechat_chat = await customer_with_history(store, "wechat", "o", "c")
        await store.link(web.id, "phone", PHONE)
        await store.link(app.id, "phone", PHONE)  # app -> web
        await store.link(wechat.id, "member_id", "M-1")
        survivor = await store.link(app.id, "member_id", "M-1")  # a stale id: web -> wechat

        assert survivor.id == wechat.id
        for channel, external_id in (("web", "w"), ("app", "a"), ("wechat", "o")):
            assert (await store.resolve_customer(channel, external_id)).id == wechat.id
        assert await store.client.get(store.keys.link("phone", PHONE)) == wechat.id
        conversations = await store.customer_conversations(web.id)
        assert {c.id for c in conversations} == {web_chat.id, app_chat.id, wechat_chat.id}
        assert sum(c.is_open for c in conversations) == 1

    run(redis_url, body)


def test_concurrent_links_of_one_phone_end_in_one_customer(redis_url):
    async def body(store: ConversationStore) -> None:
        customers = [await store.resolve_customer("web", f"device-{n}") for n in range(8)]
        survivors = await asyncio.gather(*(store.link(c.id, "phone", PHONE) for c in customers))
        ids = {(await store.resolve_customer("web", f"device-{n}")).id for n in range(8)}
        assert len(ids) == 1
        final = ids.pop()
        assert (await store.get_customer(survivors[-1].id)).id == final
        assert len(await store.customer_identities(final)) == 8

    run(redis_url, body)


def test_bad_links_are_refused(redis_url):
    async def body(store: ConversationStore) -> None:
        customer = await store.resolve_customer("web", "w")
        with pytest.raises(ValueError, match="unknown link kind"):
            await store.link(customer.id, "email", "a@b.c")
        with pytest.raises(ValueError, match="empty"):
            await store.link(customer.id, "phone", "")
        with pytest.raises(CustomerNotFound):
            await store.link("nobody", "phone", PHONE)
        assert await store.client.get(store.keys.link("phone", PHONE)) is None

    run(redis_url, body)
