"""The handoff queue on a real Redis: enqueue, priority, routing, claims, transfers, breaches, repair."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis

from conversations.states import State
from handoff.agents import Agent
from handoff.queue import Handoff, HandoffQueue, HandoffRequest

PREFIX = "t-queue:"


@asynccontextmanager
async def opened(redis_url: str, **settings: Any) -> AsyncIterator[HandoffQueue]:
    """A queue (and its conversation store, ``queue.store``) on a client of its own."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        await asyncio.gather(*(client.ping() for _ in range(10)))  # pooled connections, so gather overlaps
        yield HandoffQueue(client, prefix=PREFIX, **settings)
    finally:
        await client.aclose()


async def escalate(
    queue: HandoffQueue,
    visitor: str,
    *,
    skill: str = "general",
    language: str = "en",
    severity: int = 1,
    vip: bool = False,
    reasons: tuple[str, ...] = ("explicit_request",),
    admit: bool = True,
) -> Handoff:
    """A real conversation moved bot -> queued, enqueued (and admitted) as the pipeline would."""
    store = queue.store
    customer = await store.resolve_customer("web", visitor, tier="vip" if vip else None)
    conversation = await store.current_conversation(customer.id, "web", language)
    conversation = await store.transition(
        conversation.id, State.QUEUED, expected_from=State.BOT, reason=reasons[0] if reasons else None
    )
    request = HandoffRequest(
        conversation_id=conversation.id,
        customer_id=customer.id,
        channel="web",
        language=language,
        skill=skill,
        reasons=reasons,
        severity=severity,
        vip=vip,
    )
    handoff = await queue.enqueue(request, conversation.handoff_count)
    if admit:
        admitted = await queue.admit(handoff.id)
        assert admitted is not None
        return admitted
    return handoff


async def add_agent(queue: HandoffQueue, agent: Agent, *, online: bool = True) -> Agent:
    await queue.agents.create(agent, f"{agent.id}-pw")
    if online:
        await queue.agents.set_online(agent.id, True)
    return agent


async def state_of(queue: HandoffQueue, handoff: Handoff) -> State:
    conversation = await queue.store.get_conversation(handoff.conversation_id)
    assert conversation is not None
    return conversation.state


async def audit(queue: HandoffQueue, kind: str) -> Counter[str]:
    """How many audit records of type ``kind`` each handoff has."""
    entries = await queue.client.xrange(queue.keys.audit)
    return Counter(fields["handoff_id"] for _id, fields in entries if fields["type"] == kind)


async def events_of(pubsub: Any, expected: int) -> list[dict[str, Any]]:
    """Up to ``expected`` published events, then a short look for any extra one (bounded)."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5
    for _ in range(100):
        if time.monotonic() > deadline:
            break
        message = await pubsub.get_message(timeout=0.2)
        if message is not None:
            events.append(json.loads(message["data"]))
        elif len(events) >= expected:
            break
    return events


def test_enqueue_is_idempotent(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            first = await escalate(queue, "v1", admit=False)
            request = HandoffRequest(
                first.conversation_id, first.customer_id, "web", "en", "billing", ("x",), 3, True
            )
            again, racing = await asyncio.gather(queue.enqueue(request, 1), queue.enqueue(request, 1))
            assert first.id == f"{first.conversation_id}:1" and first.status == "new"
            assert again == first and racing == first  # the stored one, the retry's fields ignored
            assert await queue.client.xlen(queue.keys.stream) == 1
            assert (await audit(queue, "queued"))[first.id] == 1
            assert await queue.for_conversation(first.conversation_id) == first
            second = await queue.enqueue(request, 2)
            assert second.id == f"{first.conversation_id}:2"
            assert await queue.for_conversation(first.conversation_id) == second

    asyncio.run(main())


def test_admit_is_idempotent_and_sets_ticket_when_nobody_could_take_it(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            lonely = await escalate(queue, "v1", admit=False)
            admitted = await queue.admit(lonely.id)
            assert admitted.status == "waiting" and admitted.ticket
            assert await queue.admit(lonely.id) == admitted
            assert (await audit(queue, "admitted"))[lonely.id] == 1
            assert [h.id for h in await queue.tickets()] == [lonely.id]

            # Online, but without the skill or the language: still a ticket.
            await add_agent(queue, Agent("zh1", "Zh", skills=("general",), languages=("zh",)))
            await add_agent(queue, Agent("bill", "Bill", skills=("billing",), languages=("en",)))
            assert (await escalate(queue, "v2")).ticket
            await add_agent(queue, Agent("en1", "En", skills=("general",), languages=("en",)), online=False)
            assert (await escalate(queue, "v3")).ticket
            await queue.agents.set_online("en1", True)
            assert not (await escalate(queue, "v4")).ticket
            assert await queue.admit("no-such:1") is None

            # Once taken, a left message is no longer pending as a ticket.
            assert (await queue.claim(lonely.id, "en1")).ok
            assert lonely.id not in {h.id for h in await queue.tickets()}

    asyncio.run(main())


def test_vip_and_severity_go_before_an_older_standard_chat(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            old = await escalate(queue, "old", severity=1)
            vip = await escalate(queue, "vip", severity=1, vip=True)
            severe = await escalate(queue, "severe", severity=3)
            later = await escalate(queue, "later", severity=1)
            assert old.created_at < vip.created_at < severe.created_at < later.created_at
            assert [h.id for h in await queue.waiting()] == [vip.id, severe.id, old.id, later.id]
            assert vip.priority == vip.created_at - 300 - 60

            await add_agent(queue, Agent("solo", "Solo", max_chats=1))
            assigned = await queue.match()
            assert [h.id for h in assigned] == [vip.id]
            standings = [await queue.standing(h.id) for h in (severe, old, later)]
            assert [s.position for s in standings] == [1, 2, 3]

    asyncio.run(main())


def test_skills_and_languages_are_respected(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(
                queue, Agent("chen", "Chen", skills=("general", "logistics"), languages=("zh",), max_chats=5)
            )
            await add_agent(
                queue, Agent("bob", "Bob", skills=("general", "billing"), languages=("zh", "en"), max_chats=1)
            )
            en_general = [await escalate(queue, f"en{n}", language="en") for n in range(3)]
            zh_logistics = await escalate(queue, "zh-l", language="zh", skill="logistics")
            en_logistics = await escalate(queue, "en-l", language="en", skill="logistics")
            zh_billing = await escalate(queue, "zh-b", language="zh", skill="billing", severity=3)

            assigned = {h.id: h.agent_id for h in await queue.match()}
            # bob has one slot: the most urgent chat he can take is the billing one.
            assert assigned == {zh_logistics.id: "chen", zh_billing.id: "bob"}
            for handoff in [*en_general, en_logistics]:
                assert (await queue.get(handoff.id)).status == "waiting"
            assert all(h.language == "zh" for h in await queue.assigned_to("chen"))
            assert await queue.match() == []  # chen has room but speaks no English

    asyncio.run(main())


def test_least_loaded_agent_gets_the_chat(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("a1", "A1", max_chats=3))
            await add_agent(queue, Agent("a2", "A2", max_chats=3))
            first = await escalate(queue, "v1")
            assert (await queue.claim(first.id, "a1")).ok
            handoffs = [await escalate(queue, f"w{n}") for n in range(3)]
            assigned = await queue.match()
            # a2 (empty) first; then both hold one and a1's last assignment is older.
            assert [(h.id, h.agent_id) for h in assigned] == [
                (handoffs[0].id, "a2"),
                (handoffs[1].id, "a1"),
                (handoffs[2].id, "a2"),
            ]
            assert await queue.agents.loads(["a1", "a2"]) == {"a1": 2, "a2": 2}

    asyncio.run(main())


def test_broadcast_routing_leaves_chats_waiting_until_an_agent_accepts(redis_url):
    async def main() -> None:
        async with opened(redis_url, routing="broadcast") as queue:
            await add_agent(queue, Agent("b1", "B1", max_chats=3))
            handoff = await escalate(queue, "v-broadcast")
            assert not handoff.ticket  # someone online could take it: not a left message
            assert await queue.match() == []
            waiting = await queue.get(handoff.id)
            assert waiting is not None and waiting.status == "waiting"
            assert (await queue.claim(handoff.id, "b1")).ok
            taken = await queue.get(handoff.id)
            assert taken is not None and taken.status == "assigned" and taken.agent_id == "b1"

    asyncio.run(main())


def test_an_unknown_routing_is_refused(redis_url):
    with pytest.raises(ValueError, match="routing must be one of assign, broadcast"):
        HandoffQueue(Redis.from_url(redis_url, decode_responses=True), routing="round-robin")  # type: ignore[arg-type]


def test_capacity_is_never_exceeded_by_concurrent_matches(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("cap", "Cap", max_chats=2))
            handoffs = [await escalate(queue, f"v{n}") for n in range(6)]
            results = await asyncio.gather(*(queue.match() for _ in range(4)))
            assert sum(len(r) for r in results) == 2
            assert await queue.agents.load("cap") == 2
            refused = await queue.claim(handoffs[5].id, "cap")
            assert not refused.ok and refused.reason == "at_capacity"
            await queue.agents.set_online("cap", False)
            offline = await queue.claim(handoffs[5].id, "cap")
            assert offline.reason == "agent_offline"
            assert (await queue.claim("nope:1", "cap")).reason == "unknown"
            assert (await queue.claim(handoffs[5].id, "ghost")).reason == "unknown_agent"
            assert len(await queue.waiting()) == 4

    asyncio.run(main())


def test_racing_claims_assign_once(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            for n in range(5):
                await add_agent(queue, Agent(f"r{n}", f"R{n}", max_chats=5))
            handoff = await escalate(queue, "v1")
            results = await asyncio.gather(*(queue.claim(handoff.id, f"r{n % 5}") for n in range(10)))
            winners = [r for r in results if r.ok]
            assert len(winners) == 1
            assert {r.reason for r in results if not r.ok} == {"not_waiting"}
            assert (await audit(queue, "assigned"))[handoff.id] == 1
            assert await state_of(queue, handoff) == State.ASSIGNED
            loads = await queue.agents.loads([f"r{n}" for n in range(5)])
            assert sorted(loads.values()) == [0, 0, 0, 0, 1]
            assert loads[winners[0].handoff.agent_id] == 1

    asyncio.run(main())


def test_standing_and_estimate(redis_url):
    async def main() -> None:
        async with opened(redis_url, average_handle_seconds=240) as queue:
            await add_agent(queue, Agent("one", "One", max_chats=2))
            busy = await escalate(queue, "busy")
            assert (await queue.claim(busy.id, "one")).ok  # one of two slots taken
            waiting = [await escalate(queue, f"v{n}") for n in range(3)]
            other = await escalate(queue, "other-skill", skill="billing")
            standings = [await queue.standing(h.id) for h in waiting]
            assert [s.position for s in standings] == [1, 2, 3]
            assert {(s.waiting, s.agents_online) for s in standings} == {(3, 1)}
            # One free slot: the first is served now; the rest share 2 slots of 240 s each.
            assert [s.estimated_seconds for s in standings] == [0, 120, 240]
            nobody = await queue.standing(other.id)
            assert (nobody.position, nobody.agents_online, nobody.estimated_seconds) == (1, 0, None)
            assert (await queue.standing(busy.id)).to_dict() == dict.fromkeys(
                ("position", "waiting", "agents_online", "estimated_seconds")
            )

    asyncio.run(main())


def test_close_frees_capacity_and_is_idempotent(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("one", "One", max_chats=1))
            first, second = await escalate(queue, "v1"), await escalate(queue, "v2")
            assert [h.id for h in await queue.match()] == [first.id]
            assert (await queue.claim(second.id, "one")).reason == "at_capacity"

            await queue.store.transition(first.conversation_id, State.RESOLVED, expected_from=State.ASSIGNED)
            closed = await queue.close(first.id, "resolved")
            assert (closed.status, closed.outcome, closed.agent_id) == ("closed", "resolved", "one")
            assert await queue.agents.load("one") == 0
            assert await queue.close(first.id, "handback") == closed  # the first outcome stays
            assert (await audit(queue, "closed"))[first.id] == 1

            assert [h.id for h in await queue.match()] == [second.id]
            # Closing a waiting one takes it out of the queue.
            third = await escalate(queue, "v3")
            await queue.close(third.id, "closed")
            assert third.id not in {h.id for h in await queue.waiting()}
            assert (await queue.claim(third.id, "one")).reason == "not_waiting"

    asyncio.run(main())


def test_claim_of_a_conversation_resolved_meanwhile_is_closed(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("one", "One", max_chats=1))
            handoff = await escalate(queue, "v1")
            await queue.store.transition(handoff.conversation_id, State.RESOLVED, expected_from=State.QUEUED)
            result = await queue.claim(handoff.id, "one")
            assert not result.ok and result.reason == "not_waiting"
            assert result.handoff.status == "closed"
            assert await queue.agents.load("one") == 0

    asyncio.run(main())


def test_transfers(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("a", "A", max_chats=2))
            await add_agent(queue, Agent("b", "B", max_chats=1))
            await add_agent(queue, Agent("off", "Off", max_chats=5), online=False)
            await add_agent(queue, Agent("payer", "Payer", skills=("billing",), max_chats=2))
            handoff, filler = await escalate(queue, "v1"), await escalate(queue, "v2")
            assert (await queue.claim(handoff.id, "a")).ok

            assert (await queue.transfer_to_agent(handoff.id, "off")).reason == "agent_offline"
            assert (await queue.transfer_to_agent(handoff.id, "a")).reason == "same_agent"
            assert (await queue.claim(filler.id, "b")).ok
            assert (await queue.transfer_to_agent(handoff.id, "b")).reason == "at_capacity"
            assert (await queue.transfer_to_agent(filler.id + "x", "b")).reason == "unknown"
            await queue.close(filler.id, "closed")

            moved = await queue.transfer_to_agent(handoff.id, "b")
            assert moved.ok and (moved.handoff.agent_id, moved.handoff.transfers) == ("b", 1)
            assert await queue.agents.loads(["a", "b"]) == {"a": 0, "b": 1}
            assert await state_of(queue, handoff) == State.ASSIGNED

            back = await queue.transfer_to_skill(handoff.id, "billing")
            assert back.ok
            assert (back.handoff.status, back.handoff.skill, back.handoff.agent_id) == (
                "waiting",
                "billing",
                None,
            )
            assert back.handoff.transfers == 2 and back.handoff.priority == handoff.priority
            assert await queue.agents.load("b") == 0
            assert await state_of(queue, handoff) == State.QUEUED
            assert [h.id for h in await queue.waiting({"billing"})] == [handoff.id]
            assert await queue.waiting({"general"}) == []

            assert [(h.id, h.agent_id) for h in await queue.match()] == [(handoff.id, "payer")]
            assert await state_of(queue, handoff) == State.ASSIGNED
            assert (await queue.transfer_to_agent(filler.id, "a")).reason == "not_assigned"
            assert (await queue.transfer_to_skill(filler.id, "billing")).reason == "closed"

    asyncio.run(main())


def test_first_response_is_recorded_once(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("a", "A"))
            handoff = await escalate(queue, "v1")
            await queue.claim(handoff.id, "a")
            seconds = await queue.record_first_response(handoff.id)
            assert seconds is not None and 0 <= seconds < 60
            stored = await queue.get(handoff.id)
            assert abs(stored.first_response_at - stored.created_at - seconds) < 1e-3
            assert (
                await asyncio.gather(*(queue.record_first_response(handoff.id) for _ in range(3)))
                == [None] * 3
            )
            assert (await queue.get(handoff.id)).first_response_at == stored.first_response_at
            assert await queue.record_first_response("nope:1") is None

    asyncio.run(main())


def test_breach_is_flagged_once(redis_url):
    async def main() -> None:
        async with opened(redis_url, first_response_seconds=30) as queue:
            await add_agent(queue, Agent("a", "A"))
            late, answered, closed = [await escalate(queue, f"v{n}") for n in range(3)]
            await queue.claim(answered.id, "a")
            await queue.record_first_response(answered.id)
            await queue.close(closed.id, "closed")
            assert await queue.check_breaches(now=late.created_at + 29) == []  # not yet

            async with queue.client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(queue.keys.events)
                later = late.created_at + 31
                rounds = await asyncio.gather(*(queue.check_breaches(now=later) for _ in range(4)))
                assert [h.id for r in rounds for h in r] == [late.id]
                assert await queue.check_breaches(now=later + 100) == []
                events = await events_of(pubsub, 1)
            assert [(e["type"], e["handoff_id"]) for e in events] == [("breach", late.id)]
            assert (await queue.get(late.id)).breached
            assert not (await queue.get(answered.id)).breached and not (await queue.get(closed.id)).breached

    asyncio.run(main())


def test_events_carry_the_handoff(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("a", "A"))
            async with queue.client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(queue.keys.events)
                handoff = await escalate(queue, "v1", reasons=(), severity=2)
                await queue.claim(handoff.id, "a")
                await queue.close(handoff.id, "resolved")
                events = await events_of(pubsub, 4)
            assert [e["type"] for e in events] == ["queued", "admitted", "assigned", "closed"]
            for event in events:
                assert (
                    event["handoff_id"] == handoff.id and event["conversation_id"] == handoff.conversation_id
                )
                assert isinstance(event["at"], float)
                assert event["handoff"]["reasons"] == []
            assigned = events[2]
            assert assigned["agent_id"] == "a" and events[0]["agent_id"] is None
            parsed = Handoff.from_dict(assigned["handoff"])
            assert (parsed.status, parsed.agent_id, parsed.severity, parsed.vip) == (
                "assigned",
                "a",
                2,
                False,
            )
            assert abs(parsed.assigned_at - time.time()) < 60
            assert Handoff.from_dict(handoff.to_dict()) == handoff

    asyncio.run(main())


def test_reconcile_finishes_half_done_work(redis_url):
    class Crash(Exception):
        pass

    async def crash(point: str) -> None:
        if point == "after_claim_script":
            raise Crash(point)

    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("a", "A", max_chats=5))
            stuck = await escalate(queue, "v1")
            queue.pause = crash  # the worker dies between the claim script and the conversation
            with pytest.raises(Crash):
                await queue.claim(stuck.id, "a")
            queue.pause = None
            assert (await queue.get(stuck.id)).status == "assigned"
            assert await state_of(queue, stuck) == State.QUEUED

            gone = await escalate(queue, "v2")  # resolved by the customer, but never closed
            await queue.store.transition(gone.conversation_id, State.RESOLVED, expected_from=State.QUEUED)
            await queue.client.sadd(queue.keys.chats("a"), "left:1")  # a stale chat slot

            assert await queue.reconcile() == 3
            assert await state_of(queue, stuck) == State.ASSIGNED
            closed = await queue.get(gone.id)
            assert (closed.status, closed.outcome) == ("closed", "resolved")
            assert await queue.client.smembers(queue.keys.chats("a")) == {stuck.id}
            assert await queue.reconcile() == 0
            assert (await audit(queue, "assigned"))[stuck.id] == 1

    asyncio.run(main())


def test_reconcile_leaves_recent_changes_alone(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("a", "A"))
            handoff = await escalate(queue, "v1")
            await queue.transfer_to_skill(handoff.id, "general")  # a transfer of a waiting chat
            await queue.store.transition(handoff.conversation_id, State.RESOLVED, expected_from=State.QUEUED)
            assert await queue.reconcile(min_age_seconds=3600) == 0
            assert (await queue.get(handoff.id)).status == "waiting"
            assert await queue.reconcile() == 1
            assert (await queue.get(handoff.id)).status == "closed"

    asyncio.run(main())
