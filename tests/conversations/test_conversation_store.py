"""The conversation store on a real Redis: customers, conversations, turns, states, events."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio

from conversations.keys import Keys
from conversations.states import InvalidTransition, State
from conversations.store import BotSilenced, ConversationNotFound, ConversationStore, CustomerNotFound
from tests.conversations.test_states import DESIGN_TABLE

# How to bring a fresh conversation (state bot) to each state along allowed transitions.
PATH_TO = {
    State.BOT: [],
    State.QUEUED: [State.QUEUED],
    State.ASSIGNED: [State.QUEUED, State.ASSIGNED],
    State.RESOLVED: [State.RESOLVED],
}


def run(url: str, body: Callable[[ConversationStore], Awaitable[Any]], **options: Any) -> Any:
    """Run ``body(store)`` on a fresh event loop with a store that is closed afterwards."""

    async def main() -> Any:
        async with ConversationStore.from_url(url, **options) as store:
            return await body(store)

    return asyncio.run(main())


async def new_conversation(store: ConversationStore, external_id: str = "visitor-1", channel: str = "web"):
    customer = await store.resolve_customer(channel, external_id)
    return await store.current_conversation(customer.id, channel, "en")


# -- customers --------------------------------------------------------------------------------


def test_a_customer_is_created_on_first_sight_and_found_again(redis_url):
    async def body(store: ConversationStore) -> None:
        first = await store.resolve_customer("web", "visitor-1")
        again = await store.resolve_customer("web", "visitor-1")
        other_channel = await store.resolve_customer("app", "visitor-1")
        assert first == again
        assert first.tier == "standard" and first.display_name is None
        assert other_channel.id != first.id  # same external id on another channel: another identity
        assert await store.get_customer(first.id) == first
        assert await store.get_customer("nobody") is None

    run(redis_url, body)


def test_tier_and_display_name_are_set_and_can_change(redis_url):
    async def body(store: ConversationStore) -> None:
        created = await store.resolve_customer("wechat", "openid-7", tier="vip", display_name="李雷")
        assert (created.tier, created.display_name) == ("vip", "李雷")
        unchanged = await store.resolve_customer("wechat", "openid-7")
        assert (unchanged.tier, unchanged.display_name) == ("vip", "李雷")
        upgraded = await store.resolve_customer("wechat", "openid-7", tier="platinum")
        assert upgraded.id == created.id and upgraded.tier == "platinum"

    run(redis_url, body)


def test_unknown_channels_are_refused_before_anything_is_written(redis_url):
    async def body(store: ConversationStore) -> None:
        with pytest.raises(ValueError, match="unknown channel"):
            await store.resolve_customer("fax", "1")
        customer = await store.resolve_customer("web", "v")
        with pytest.raises(ValueError, match="unknown channel"):
            await store.current_conversation(customer.id, "fax")
        assert await store.customer_conversations(customer.id) == []
        assert await store.client.dbsize() == 3  # identity, customer, its identities set

    run(redis_url, body)


def test_customer_identities(redis_url):
    async def body(store: ConversationStore) -> None:
        customer = await store.resolve_customer("app", "user-42")
        identities = await store.customer_identities(customer.id)
        assert [(i.channel, i.external_id) for i in identities] == [("app", "user-42")]
        with pytest.raises(CustomerNotFound):
            await store.customer_identities("nobody")

    run(redis_url, body)


# -- conversations ----------------------------------------------------------------------------


def test_current_conversation_is_created_in_state_bot_then_reused(redis_url):
    async def body(store: ConversationStore) -> None:
        customer = await store.resolve_customer("web", "v1")
        first = await store.current_conversation(customer.id, "web", "zh")
        assert first.state is State.BOT and first.customer_id == customer.id
        assert (first.channel, first.language, first.handoff_count, first.last_reason) == (
            "web",
            "zh",
            0,
            None,
        )
        assert first.created_at == first.updated_at
        again = await store.current_conversation(customer.id, "web")
        assert again == first
        assert await store.get_conversation(first.id) == first
        assert await store.get_conversation("nope") is None

    run(redis_url, body)


def test_one_open_conversation_per_customer_across_channels(redis_url):
    async def body(store: ConversationStore) -> None:
        customer = await store.resolve_customer("web", "v1")
        on_web = await store.current_conversation(customer.id, "web")
        from_app = await store.current_conversation(customer.id, "app")
        assert from_app.id == on_web.id and from_app.channel == "web"

    run(redis_url, body)


def test_a_resolved_conversation_makes_way_for_a_new_one(redis_url):
    async def body(store: ConversationStore) -> None:
        customer = await store.resolve_customer("web", "v1")
        first = await store.current_conversation(customer.id, "web")
        await store.append_customer_turn(first.id, "thanks, solved", "web", "en", "m1")
        resolved = await store.transition(first.id, State.RESOLVED)
        assert not resolved.is_open
        second = await store.current_conversation(customer.id, "app")
        assert second.id != first.id and second.state is State.BOT and second.channel == "app"
        history = await store.customer_conversations(customer.id)
        assert [c.id for c in history] == [first.id, second.id]
        assert [c.state for c in history] == [State.RESOLVED, State.BOT]

    run(redis_url, body)


def test_current_conversation_of_an_unknown_customer_is_an_error(redis_url):
    async def body(store: ConversationStore) -> None:
        with pytest.raises(CustomerNotFound):
            await store.current_conversation("nobody", "web")
        with pytest.raises(CustomerNotFound):
            await store.customer_conversations("nobody")
        assert await store.client.dbsize() == 0

    run(redis_url, body)


# -- states -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "target"), list(itertools.product(State, State)))
def test_every_transition_in_redis_is_allowed_or_refused_as_the_design_says(redis_url, source, target):
    async def body(store: ConversationStore) -> None:
        conversation = await new_conversation(store)
        for step in PATH_TO[source]:
            await store.transition(conversation.id, step)
        before = await store.get_conversation(conversation.id)
        assert before is not None and before.state is source
        if (source.value, target.value) in DESIGN_TABLE:
            after = await store.transition(conversation.id, target, expected_from=source)
            assert after.state is target
            assert await store.get_conversation(conversation.id) == after
        else:
            with pytest.raises(InvalidTransition) as raised:
                await store.transition(conversation.id, target)
            assert raised.value.from_state is source and raised.value.to_state is target
            assert raised.value.conversation_id == conversation.id
            assert await store.get_conversation(conversation.id) == before  # nothing changed

    run(redis_url, body)


def test_expected_from_must_still_hold(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation = await new_conversation(store)
        await store.transition(conversation.id, State.QUEUED, reason="explicit_request")
        with pytest.raises(InvalidTransition, match="expected bot, but it is queued") as raised:
            await store.transition(conversation.id, State.RESOLVED, expected_from=State.BOT)
        assert raised.value.expected_from is State.BOT
        # allowed by the table from queued, but the caller's belief is stale: refused all the same
        with pytest.raises(InvalidTransition):
            await store.transition(conversation.id, "assigned", expected_from="bot")
        current = await store.get_conversation(conversation.id)
        assert current is not None and current.state is State.QUEUED

    run(redis_url, body)


def test_each_escalation_counts_and_records_its_reason(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation = await new_conversation(store)
        queued = await store.transition(conversation.id, State.QUEUED, reason="negative_sentiment")
        assert (queued.handoff_count, queued.last_reason) == (1, "negative_sentiment")
        assert queued.updated_at > conversation.updated_at
        await store.transition(conversation.id, State.ASSIGNED, reason="agent-7")
        back = await store.transition(conversation.id, State.BOT, reason="agent handed back")
        assert (back.handoff_count, back.last_reason) == (1, "negative_sentiment")
        again = await store.transition(conversation.id, State.QUEUED, reason="explicit_request")
        assert (again.handoff_count, again.last_reason) == (2, "explicit_request")

    run(redis_url, body)


def test_transition_of_an_unknown_conversation_is_an_error(redis_url):
    async def body(store: ConversationStore) -> None:
        with pytest.raises(ConversationNotFound):
            await store.transition("nope", State.QUEUED)
        assert await store.client.dbsize() == 0

    run(redis_url, body)


def test_transitions_are_added_to_the_stream_and_published(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation = await new_conversation(store)
        channel = store.keys.events(conversation.id)
        async with store.client.pubsub() as pubsub:
            await pubsub.psubscribe(store.keys.events_pattern)
            assert (await pubsub.get_message(timeout=2))["type"] == "psubscribe"
            await store.transition(conversation.id, State.QUEUED, reason="explicit_request")
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
            await pubsub.punsubscribe()
        assert message is not None and message["channel"] == channel
        published = json.loads(message["data"])
        assert published["type"] == "transition"
        assert (published["from"], published["to"], published["reason"]) == (
            "bot",
            "queued",
            "explicit_request",
        )
        assert published["handoff_count"] == "1"
        events = await store.events(conversation.id)
        assert [fields["type"] for _id, fields in events] == ["created", "transition"]
        stream_id, fields = events[-1]
        assert published["stream_id"] == stream_id
        assert {k: v for k, v in published.items() if k != "stream_id"} == fields
        # a follower resumes after the last id it saw
        assert await store.events(conversation.id, after=stream_id) == []
        assert await store.events(conversation.id, after=events[0][0]) == events[1:]

    run(redis_url, body)


def test_the_events_pattern_only_matches_its_own_prefix(redis_url):
    async def body(store: ConversationStore) -> None:
        odd = Keys("t*[1]:")
        assert odd.events_pattern == "t\\*\\[1\\]:conv:*:events"
        async with store.client.pubsub() as pubsub:
            await pubsub.psubscribe(odd.events_pattern)
            await pubsub.get_message(timeout=2)
            await new_conversation(store)  # publishes under baton:
            assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is None
            await store.client.publish(odd.events("v1"), "hello")
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
            await pubsub.punsubscribe()
        assert message is not None and message["data"] == "hello"

    run(redis_url, body)


# -- turns ------------------------------------------------------------------------------------


def test_customer_turns_are_stored_with_gapless_seq_and_everything_they_carry(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation = await new_conversation(store)
        nlu = {"intent": {"name": "order_status", "confidence": 0.97}, "entities": [], "slots": {}}
        first, stored, *_ = await store.append_customer_turn(
            conversation.id, "我的快递到哪了", "wechat", "zh", "wx-1", nlu=nlu, timings={"nlu_ms": 7.5}
        )
        assert stored
        assert (first.seq, first.sender, first.channel, first.language) == (1, "customer", "wechat", "zh")
        assert (first.text, first.nlu, first.client_message_id, first.timings) == (
            "我的快递到哪了",
            nlu,
            "wx-1",
            {"nlu_ms": 7.5},
        )
        second, _, *_ = await store.append_customer_turn(
            conversation.id, "LM2024051234", "wechat", "zh", "wx-2"
        )
        third, _, *_ = await store.append_customer_turn(conversation.id, "no id", "web", "en", None)
        assert [first.seq, second.seq, third.seq] == [1, 2, 3]
        assert await store.turns(conversation.id) == [first, second, third]
        updated = await store.get_conversation(conversation.id)
        assert updated is not None
        assert updated.language == "en"  # follows the customer's latest message
        assert updated.updated_at == third.created_at

    run(redis_url, body)


def test_a_repeated_client_message_id_returns_the_original_and_stores_nothing(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation = await new_conversation(store)
        original, stored, *_ = await store.append_customer_turn(conversation.id, "hello", "web", "en", "m-1")
        events_before = await store.events(conversation.id)
        retry, stored_again, *_ = await store.append_customer_turn(
            conversation.id, "hello (retried)", "web", "en", "m-1"
        )
        assert stored and not stored_again
        assert retry == original
        assert await store.turns(conversation.id) == [original]
        assert await store.events(conversation.id) == events_before
        # the same message id in another conversation is another message
        other = await new_conversation(store, "visitor-2")
        elsewhere, stored_elsewhere, *_ = await store.append_customer_turn(
            other.id, "hello", "web", "en", "m-1"
        )
        assert stored_elsewhere and elsewhere.seq == 1

    run(redis_url, body)


def test_turns_page_with_a_cursor(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation = await new_conversation(store)
        for n in range(1, 8):
            await store.append_customer_turn(conversation.id, f"message {n}", "web", "en", f"m{n}")
        assert [t.seq for t in await store.turns(conversation.id, after_seq=0, limit=3)] == [1, 2, 3]
        assert [t.seq for t in await store.turns(conversation.id, after_seq=3, limit=3)] == [4, 5, 6]
        assert [t.text for t in await store.turns(conversation.id, after_seq=6)] == ["message 7"]
        assert await store.turns(conversation.id, after_seq=7) == []
        assert await store.turns("unknown") == []
        with pytest.raises(ValueError):
            await store.turns(conversation.id, limit=0)

    run(redis_url, body)


def test_the_bot_speaks_only_in_state_bot(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation = await new_conversation(store)
        reply = await store.append_bot_turn(
            conversation.id, "Hi! How can I help?", nlu={"action": "utter_greet"}
        )
        assert (reply.seq, reply.sender, reply.channel, reply.language) == (1, "bot", "web", "en")
        for state in (State.QUEUED, State.ASSIGNED):
            await store.transition(conversation.id, state)
            with pytest.raises(BotSilenced) as raised:
                await store.append_bot_turn(conversation.id, "I can help with that!")
            assert raised.value.state is state and raised.value.conversation_id == conversation.id
        agent = await store.append_turn(conversation.id, "agent", "Hello, this is Anna.", language="zh")
        assert (agent.seq, agent.sender, agent.language) == (2, "agent", "zh")
        await store.transition(conversation.id, State.BOT, reason="handed back")
        back = await store.append_bot_turn(conversation.id, "I'm back.", channel="app")
        assert (back.seq, back.channel) == (3, "app")
        await store.transition(conversation.id, State.RESOLVED)
        with pytest.raises(BotSilenced):
            await store.append_bot_turn(conversation.id, "anything else?")
        assert [t.sender for t in await store.turns(conversation.id)] == ["bot", "agent", "bot"]

    run(redis_url, body)


def test_agent_and_system_turns_and_the_senders_they_refuse(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation = await new_conversation(store)
        system = await store.append_turn(conversation.id, "system", "You are number 3 in the queue.")
        assert (system.sender, system.channel, system.language, system.nlu) == ("system", "web", "en", None)
        for sender in ("bot", "customer", "robot"):
            with pytest.raises(ValueError):
                await store.append_turn(conversation.id, sender, "sneaky")
        assert len(await store.turns(conversation.id)) == 1

    run(redis_url, body)


def test_turns_on_an_unknown_conversation_are_errors(redis_url):
    async def body(store: ConversationStore) -> None:
        with pytest.raises(ConversationNotFound):
            await store.append_customer_turn("nope", "hi", "web", "en", "m1")
        with pytest.raises(ConversationNotFound):
            await store.append_bot_turn("nope", "hi")
        with pytest.raises(ConversationNotFound):
            await store.append_bot_turn("nope", "hi", channel="web", language="en")
        with pytest.raises(ConversationNotFound):
            await store.append_turn("nope", "agent", "hi")
        assert await store.client.dbsize() == 0

    run(redis_url, body)


def test_every_turn_is_an_event_with_the_turn_itself(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation = await new_conversation(store)
        await store.append_customer_turn(conversation.id, "你好", "app", "zh", "a-1")
        _id, fields = (await store.events(conversation.id))[-1]
        assert (fields["type"], fields["seq"], fields["sender"]) == ("turn", "1", "customer")
        assert json.loads(fields["turn"])["text"] == "你好"
        assert fields["turn"] == (await store.client.lindex(store.keys.turns(conversation.id), 0))

    run(redis_url, body)


def test_event_streams_are_capped(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation = await new_conversation(store)
        for n in range(300):
            await store.append_turn(conversation.id, "system", f"tick {n}")
        stream_length = await store.client.xlen(store.keys.events(conversation.id))
        assert stream_length < 301  # approximate trimming keeps about events_maxlen
        assert len(await store.turns(conversation.id, limit=1000)) == 300  # turns are never trimmed

    run(redis_url, body, events_maxlen=10)


# -- keys and configuration -------------------------------------------------------------------


def test_keys_follow_the_documented_layout(redis_url):
    async def body(store: ConversationStore) -> None:
        customer = await store.resolve_customer("web", "v1")
        conversation = await store.current_conversation(customer.id, "web")
        await store.append_customer_turn(conversation.id, "hi", "web", "en", "m1")
        await store.link(customer.id, "phone", "+8613800000000")
        keys = store.keys
        expected = {
            keys.identity("web", "v1"): "string",
            keys.link("phone", "+8613800000000"): "string",
            keys.customer(customer.id): "hash",
            keys.customer_identities(customer.id): "set",
            keys.customer_links(customer.id): "set",
            keys.customer_conversations(customer.id): "zset",
            keys.customer_open(customer.id): "string",
            keys.conversation(conversation.id): "hash",
            keys.turns(conversation.id): "list",
            keys.message_ids(conversation.id): "hash",
            keys.events(conversation.id): "stream",
        }
        actual = {key: await store.client.type(key) for key in await store.client.keys("*")}
        assert actual == expected
        assert all(key.startswith("baton:") for key in actual)

    run(redis_url, body)


def test_two_prefixes_share_a_server_without_seeing_each_other(redis_url):
    async def body(store: ConversationStore) -> None:
        async with ConversationStore(store.client, prefix="tenant-b:") as other:
            mine = await store.resolve_customer("web", "v1")
            theirs = await other.resolve_customer("web", "v1")
            assert mine.id != theirs.id
            assert await other.get_customer(mine.id) is None
            conversation = await store.current_conversation(mine.id, "web")
            assert await other.get_conversation(conversation.id) is None
        # the shared client stays open: the store that did not create it does not close it
        assert await store.client.ping()

    run(redis_url, body)


def test_a_client_without_decoded_responses_is_refused(redis_url):
    async def body() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            with pytest.raises(ValueError, match="decode_responses=True"):
                ConversationStore(client)
        finally:
            await client.aclose()

    asyncio.run(body())


# -- what the service needs: open/latest conversation, buttons, annotations, bot context --------


def test_open_and_latest_conversation_follow_resolution(redis_url):
    async def body(store: ConversationStore) -> None:
        customer = await store.resolve_customer("web", "visitor-9")
        assert await store.open_conversation(customer.id) is None  # nothing is created by asking
        assert await store.latest_conversation(customer.id) is None
        first = await store.current_conversation(customer.id, "web")
        assert (await store.open_conversation(customer.id)).id == first.id
        await store.transition(first.id, State.RESOLVED)
        assert await store.open_conversation(customer.id) is None
        assert (await store.latest_conversation(customer.id)).state == State.RESOLVED
        second = await store.current_conversation(customer.id, "web")
        assert (await store.latest_conversation(customer.id)).id == second.id != first.id
        with pytest.raises(CustomerNotFound):
            await store.open_conversation("nobody")

    run(redis_url, body)


def test_bot_turns_keep_their_buttons_and_the_message_they_answer(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation = await new_conversation(store)
        buttons = [{"title": "退款多久到账", "payload": "/faq/refund_time"}]
        asked, _, *_ = await store.append_customer_turn(conversation.id, "退款", "web", "zh", "m1")
        turn = await store.append_bot_turn(conversation.id, "您是想问？", buttons=buttons, reply_to=asked.seq)
        assert (turn.buttons, turn.reply_to) == (buttons, 1)
        stored = (await store.turns(conversation.id))[1]
        assert (stored.buttons, stored.reply_to) == (buttons, 1)
        assert asked.reply_to is None

    run(redis_url, body)


def test_annotating_a_turn_adds_nlu_and_timings_and_keeps_the_rest(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation = await new_conversation(store)
        turn, _, *_ = await store.append_customer_turn(
            conversation.id, "hi", "web", "en", "m1", timings={"a": 1.0}
        )
        annotated = await store.annotate_turn(
            conversation.id, turn.seq, nlu={"intent": "greet"}, timings={"b": 2.0}
        )
        assert annotated.nlu == {"intent": "greet"} and annotated.timings == {"a": 1.0, "b": 2.0}
        [stored] = await store.turns(conversation.id)
        assert stored == annotated
        assert (stored.text, stored.seq, stored.client_message_id) == ("hi", 1, "m1")
        for missing in (0, 2):
            with pytest.raises(ConversationNotFound):
                await store.annotate_turn(conversation.id, missing, nlu={})

    run(redis_url, body)


def test_the_bot_context_is_kept_per_conversation(redis_url):
    async def body(store: ConversationStore) -> None:
        conversation = await new_conversation(store)
        assert await store.bot_context(conversation.id) is None
        context = {"language": "zh", "slots": {"order_number": "LM2024051234"}}
        await store.save_bot_context(conversation.id, context)
        assert await store.bot_context(conversation.id) == context

    run(redis_url, body)
