"""Races the store must win: concurrent calls in one process and from separate connections.

``asyncio.gather`` on one store sends the calls over several pooled connections at once, so
a read-then-write done in Python would interleave here; the threads use separate clients
and event loops, as two API replicas would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from conversations.states import InvalidTransition, State
from conversations.store import BotSilenced, ConversationStore

N = 20


def run(url: str, body: Callable[[ConversationStore], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with ConversationStore.from_url(url) as store:
            await warm_up(store)
            return await body(store)

    return asyncio.run(main())


async def warm_up(store: ConversationStore) -> None:
    """Open N pooled connections first: otherwise the first call finishes while the others
    are still connecting, and the calls would not overlap at all."""
    await asyncio.gather(*(store.client.ping() for _ in range(N)))


def in_two_replicas(url: str, body: Callable[[ConversationStore], Awaitable[list[Any]]]) -> list[Any]:
    """Run ``body`` in two threads at once, each with its own store, client and event loop."""
    start = threading.Barrier(2, timeout=10)
    results: list[list[Any]] = [[], []]
    errors: list[BaseException] = []

    def replica(slot: int) -> None:
        async def main() -> None:
            async with ConversationStore.from_url(url) as store:
                await warm_up(store)  # connect before the barrier, so both fire together
                start.wait()
                results[slot] = await body(store)

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a replica hung"
    assert not errors, errors
    return results[0] + results[1]


async def _outcome(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except InvalidTransition as exc:
        return exc


def test_concurrent_escalations_hand_off_once(redis_url):
    async def body(store: ConversationStore) -> None:
        customer = await store.resolve_customer("web", "v1")
        conversation = await store.current_conversation(customer.id, "web")
        outcomes = await asyncio.gather(
            *(
                _outcome(store.transition(conversation.id, State.QUEUED, reason=f"worker-{n}"))
                for n in range(N)
            )
        )
        winners = [o for o in outcomes if not isinstance(o, InvalidTransition)]
        assert len(winners) == 1
        assert sum(isinstance(o, InvalidTransition) for o in outcomes) == N - 1
        final = await store.get_conversation(conversation.id)
        assert final is not None and final.handoff_count == 1 and final.last_reason == winners[0].last_reason
        transitions = [f for _id, f in await store.events(conversation.id) if f["type"] == "transition"]
        assert len(transitions) == 1

    run(redis_url, body)


def test_concurrent_escalations_from_two_replicas_hand_off_once(redis_url):
    async def setup(store: ConversationStore) -> str:
        customer = await store.resolve_customer("app", "u1")
        return (await store.current_conversation(customer.id, "app")).id

    conversation_id = run(redis_url, setup)

    async def escalate(store: ConversationStore) -> list[Any]:
        return await asyncio.gather(
            *(_outcome(store.transition(conversation_id, State.QUEUED, reason="x")) for _ in range(N // 2))
        )

    outcomes = in_two_replicas(redis_url, escalate)
    assert len(outcomes) == N
    assert sum(not isinstance(o, InvalidTransition) for o in outcomes) == 1

    async def check(store: ConversationStore) -> None:
        final = await store.get_conversation(conversation_id)
        assert final is not None and final.state is State.QUEUED and final.handoff_count == 1

    run(redis_url, check)


def test_concurrent_duplicate_submissions_store_one_turn(redis_url):
    async def body(store: ConversationStore) -> None:
        customer = await store.resolve_customer("wechat", "openid")
        conversation = await store.current_conversation(customer.id, "wechat")
        results = await asyncio.gather(
            *(
                store.append_customer_turn(conversation.id, "你好", "wechat", "zh", "MsgId-1")
                for _ in range(N)
            )
        )
        assert sum(stored for _turn, stored, *_ in results) == 1
        assert len({turn.id for turn, _stored, *_ in results}) == 1
        assert [t.seq for t in await store.turns(conversation.id)] == [1]

    run(redis_url, body)


def test_duplicate_submissions_from_two_replicas_store_one_turn(redis_url):
    async def setup(store: ConversationStore) -> str:
        customer = await store.resolve_customer("wechat", "openid")
        return (await store.current_conversation(customer.id, "wechat")).id

    conversation_id = run(redis_url, setup)

    async def submit(store: ConversationStore) -> list[Any]:
        return await asyncio.gather(
            *(
                store.append_customer_turn(conversation_id, "retry", "wechat", "zh", f"MsgId-{n}")
                for n in range(5)
                for _copy in range(2)
            )
        )

    results = in_two_replicas(redis_url, submit)
    assert sum(stored for _turn, stored, *_ in results) == 5  # 5 messages, each sent 4 times

    async def check(store: ConversationStore) -> None:
        turns = await store.turns(conversation_id)
        assert [t.seq for t in turns] == [1, 2, 3, 4, 5]
        assert sorted(t.client_message_id for t in turns) == [f"MsgId-{n}" for n in range(5)]

    run(redis_url, check)


def test_concurrent_distinct_messages_get_gapless_increasing_seqs(redis_url):
    async def body(store: ConversationStore) -> None:
        customer = await store.resolve_customer("web", "v1")
        conversation = await store.current_conversation(customer.id, "web")
        results = await asyncio.gather(
            *(store.append_customer_turn(conversation.id, f"m{n}", "web", "en", f"id-{n}") for n in range(30))
        )
        assert sorted(turn.seq for turn, *_ in results) == list(range(1, 31))
        stored = await store.turns(conversation.id)
        assert [t.seq for t in stored] == list(range(1, 31))
        assert {t.text for t in stored} == {f"m{n}" for n in range(30)}

    run(redis_url, body)


def test_concurrent_current_conversation_makes_one(redis_url):
    async def body(store: ConversationStore) -> None:
        customer = await store.resolve_customer("web", "v1")
        conversations = await asyncio.gather(
            *(store.current_conversation(customer.id, ("web", "app")[n % 2]) for n in range(N))
        )
        assert len({c.id for c in conversations}) == 1
        assert len(await store.customer_conversations(customer.id)) == 1

    run(redis_url, body)


def test_current_conversation_from_two_replicas_makes_one(redis_url):
    customer_id = run(redis_url, lambda store: _customer_id(store))

    async def open_one(store: ConversationStore) -> list[Any]:
        return await asyncio.gather(*(store.current_conversation(customer_id, "web") for _ in range(N // 2)))

    conversations = in_two_replicas(redis_url, open_one)
    assert len({c.id for c in conversations}) == 1


async def _customer_id(store: ConversationStore) -> str:
    return (await store.resolve_customer("web", "v1")).id


def test_concurrent_first_sight_makes_one_customer(redis_url):
    async def body(store: ConversationStore) -> None:
        customers = await asyncio.gather(*(store.resolve_customer("app", "new-user") for _ in range(N)))
        assert len({c.id for c in customers}) == 1
        assert len(await store.client.keys(store.keys.customer("*"))) == 2  # the hash and its identities

    run(redis_url, body)


def test_the_bot_never_writes_after_a_racing_handoff(redis_url):
    """Bot replies and an escalation race; no bot turn may land after the handoff."""

    async def body(store: ConversationStore) -> None:
        for round_ in range(10):
            customer = await store.resolve_customer("web", f"v{round_}")
            conversation = await store.current_conversation(customer.id, "web")

            async def reply(n: int, conversation_id: str = conversation.id) -> str:
                try:
                    await store.append_bot_turn(conversation_id, f"answer {n}")
                except BotSilenced:
                    return "silenced"
                return "sent"

            results = await asyncio.gather(
                *(reply(n) for n in range(5)),
                store.transition(conversation.id, State.QUEUED, reason="explicit_request"),
                *(reply(n) for n in range(5, 10)),
            )
            sent = sum(r == "sent" for r in results if isinstance(r, str))
            events = [f for _id, f in await store.events(conversation.id)]
            handoff_at = next(i for i, f in enumerate(events) if f["type"] == "transition")
            assert all(f["type"] != "turn" for f in events[handoff_at:])
            assert len(await store.turns(conversation.id)) == sent

    run(redis_url, body)
