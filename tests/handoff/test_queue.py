"""The handoff queue on a real Redis: escalation, priority, routing, claims, transfers, finishing,
breaches; every change of hands keeps the conversation and its handoff in step."""

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

from conversations.model import Turn
from conversations.states import State
from conversations.store import draft_turn
from handoff.agents import Agent
from handoff.handoffs import Handoff, HandoffRequest
from handoff.queue import HandoffQueue, HandoffRefused
from handoff.routing import match
from handoff.standing import standing

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
    """A real conversation escalated (bot -> queued and its handoff, one step) and admitted, as the
    pipeline and an assigner would."""
    store = queue.store
    customer = await store.resolve_customer("web", visitor, tier="vip" if vip else None)
    conversation = await store.current_conversation(customer.id, "web", language)
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
    handoff = await queue.escalate(request, reasons[0] if reasons else "explicit_request", first=True)
    assert handoff is not None
    assert await state_of(queue, handoff) == State.QUEUED
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


def test_an_escalation_is_one_handoff_however_often_it_is_asked(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            first = await escalate(queue, "v1", admit=False)
            request = HandoffRequest(
                first.conversation_id, first.customer_id, "web", "en", "billing", ("x",), 3, True
            )
            again, racing = await asyncio.gather(
                queue.escalate(request, "x", first=False), queue.escalate(request, "x", first=False)
            )
            assert first.id == f"{first.conversation_id}:1" and first.status == "new"
            assert again is None and racing is None  # the bot no longer holds it: nothing written
            assert await queue.client.xlen(queue.keys.stream) == 1
            assert (await audit(queue, "queued"))[first.id] == 1
            assert await queue.for_conversation(first.conversation_id) == first
            conversation = await queue.store.get_conversation(first.conversation_id)
            assert (conversation.state, conversation.handoff_count, conversation.last_reason) == (
                State.QUEUED,
                1,
                "explicit_request",
            )
            stats = await queue.metrics.snapshot()
            assert stats["handoffs"] == 1 and stats["handoffs_by_reason"] == {"explicit_request": 1}

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
            assigned = await match(queue)
            assert [h.id for h in assigned] == [vip.id]
            standings = [await standing(queue, h.id) for h in (severe, old, later)]
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

            assigned = {h.id: h.agent_id for h in await match(queue)}
            # bob has one slot: the most urgent chat he can take is the billing one.
            assert assigned == {zh_logistics.id: "chen", zh_billing.id: "bob"}
            for handoff in [*en_general, en_logistics]:
                assert (await queue.get(handoff.id)).status == "waiting"
            assert all(h.language == "zh" for h in await queue.assigned_to("chen"))
            assert await match(queue) == []  # chen has room but speaks no English

    asyncio.run(main())


def test_least_loaded_agent_gets_the_chat(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("a1", "A1", max_chats=3))
            await add_agent(queue, Agent("a2", "A2", max_chats=3))
            first = await escalate(queue, "v1")
            assert (await queue.claim(first.id, "a1")).ok
            handoffs = [await escalate(queue, f"w{n}") for n in range(3)]
            assigned = await match(queue)
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
            assert await match(queue) == []
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
            results = await asyncio.gather(*(match(queue) for _ in range(4)))
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
            standings = [await standing(queue, h.id) for h in waiting]
            assert [s.position for s in standings] == [1, 2, 3]
            assert {(s.waiting, s.agents_online) for s in standings} == {(3, 1)}
            # One free slot: the first is served now; the rest share 2 slots of 240 s each.
            assert [s.estimated_seconds for s in standings] == [0, 120, 240]
            nobody = await standing(queue, other.id)
            assert (nobody.position, nobody.agents_online, nobody.estimated_seconds) == (1, 0, None)
            assert (await standing(queue, busy.id)).to_dict() == dict.fromkeys(
                ("position", "waiting", "agents_online", "estimated_seconds")
            )

    asyncio.run(main())


def test_close_frees_capacity_and_is_idempotent(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("one", "One", max_chats=1))
            first, second = await escalate(queue, "v1"), await escalate(queue, "v2")
            assert [h.id for h in await match(queue)] == [first.id]
            assert (await queue.claim(second.id, "one")).reason == "at_capacity"

            held = await queue.get(first.id)
            resolved = await queue.finish(
                held, actor="one", expected=State.ASSIGNED, target=State.RESOLVED, outcome="resolved"
            )
            assert resolved.state == State.RESOLVED
            closed = await queue.get(first.id)
            assert (closed.status, closed.outcome, closed.agent_id) == ("closed", "resolved", "one")
            assert await queue.agents.load("one") == 0
            with pytest.raises(HandoffRefused) as again:  # the first outcome stays
                await queue.finish(
                    held, actor="one", expected=State.ASSIGNED, target=State.BOT, outcome="handback"
                )
            assert again.value.reason == "not_assigned" and again.value.state == "resolved"
            assert (await audit(queue, "closed"))[first.id] == 1

            assert [h.id for h in await match(queue)] == [second.id]
            # Closing a waiting one takes it out of the queue.
            third = await escalate(queue, "v3")
            await queue.finish(
                third, actor="", expected=State.QUEUED, target=State.RESOLVED, outcome="closed"
            )
            assert await state_of(queue, third) == State.RESOLVED
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
            assert (await queue.transfer_to_agent(handoff.id, "off", actor="b")).reason == "not_yours"
            await queue.finish(
                await queue.get(filler.id),
                actor="b",
                expected=State.ASSIGNED,
                target=State.RESOLVED,
                outcome="closed",
            )

            told = draft_turn(handoff.conversation_id, "system", "passing you on", "web", "en")
            moved = await queue.transfer_to_agent(handoff.id, "b", actor="a", notice_turn=told)
            assert moved.ok and (moved.handoff.agent_id, moved.handoff.transfers) == ("b", 1)
            turns = await queue.store.turns(handoff.conversation_id)
            assert [t.text for t in turns if t.sender == "system"][-1] == "passing you on"
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

            assert [(h.id, h.agent_id) for h in await match(queue)] == [(handoff.id, "payer")]
            assert await state_of(queue, handoff) == State.ASSIGNED
            assert (await queue.transfer_to_agent(filler.id, "a")).reason == "not_assigned"
            assert (await queue.transfer_to_skill(filler.id, "billing")).reason == "closed"

    asyncio.run(main())


def test_the_first_agent_message_stops_the_clock_once(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("a", "A"))
            await add_agent(queue, Agent("b", "B"))
            handoff = await escalate(queue, "v1")
            await queue.claim(handoff.id, "a")
            held = await queue.get(handoff.id)

            def said(text: str) -> Turn:
                return draft_turn(handoff.conversation_id, "agent", text, "web", "en", author="a")

            with pytest.raises(HandoffRefused) as refused:
                await queue.send(held, actor="b", turn=said("not my chat"))
            assert refused.value.reason == "not_yours"
            turn, seconds = await queue.send(held, actor="a", turn=said("hello"))
            assert turn.sender == "agent" and turn.text == "hello" and turn.author == "a"
            assert seconds is not None and 0 <= seconds < 60
            stored = await queue.get(handoff.id)
            assert abs(stored.first_response_at - stored.created_at - seconds) < 1e-3
            again = await asyncio.gather(*(queue.send(held, actor="a", turn=said(f"m{n}")) for n in range(3)))
            assert [s for _turn, s in again] == [None] * 3
            assert (await queue.get(handoff.id)).first_response_at == stored.first_response_at
            assert (await queue.metrics.snapshot())["first_response_time"]["count"] == 1
            texts = [t.text for t in await queue.store.turns(handoff.conversation_id) if t.sender == "agent"]
            assert texts == ["hello", "m0", "m1", "m2"]

    asyncio.run(main())


def test_breach_is_flagged_once(redis_url):
    async def main() -> None:
        async with opened(redis_url, first_response_seconds=30) as queue:
            await add_agent(queue, Agent("a", "A"))
            late, answered, closed = [await escalate(queue, f"v{n}") for n in range(3)]
            await queue.claim(answered.id, "a")
            answer = draft_turn(answered.conversation_id, "agent", "hi", "web", "en", author="a")
            await queue.send(await queue.get(answered.id), actor="a", turn=answer)
            await queue.finish(
                closed, actor="", expected=State.QUEUED, target=State.RESOLVED, outcome="closed"
            )
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
            assert (await queue.metrics.snapshot())["first_response_breaches"] == 1

    asyncio.run(main())


def test_events_carry_the_handoff(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("a", "A"))
            async with queue.client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(queue.keys.events)
                handoff = await escalate(queue, "v1", reasons=(), severity=2)
                await queue.claim(handoff.id, "a")
                await queue.finish(
                    await queue.get(handoff.id),
                    actor="a",
                    expected=State.ASSIGNED,
                    target=State.RESOLVED,
                    outcome="resolved",
                )
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


def test_every_change_of_hands_moves_the_conversation_with_its_handoff(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("a", "A", max_chats=2))
            await add_agent(queue, Agent("b", "B", max_chats=2))
            handoff = await escalate(queue, "v1", admit=False)
            steps: list[tuple[str, State]] = [(handoff.status, await state_of(queue, handoff))]

            async def step() -> None:
                current = await queue.get(handoff.id)
                steps.append((current.status, await state_of(queue, handoff)))

            await queue.admit(handoff.id)
            await step()
            assert (await queue.claim(handoff.id, "a")).ok
            await step()
            assert (await queue.transfer_to_agent(handoff.id, "b", actor="a")).ok
            await step()
            assert (await queue.transfer_to_skill(handoff.id, "general", actor="b")).ok
            await step()
            assert (await queue.claim(handoff.id, "a")).ok
            await step()
            back = await queue.finish(
                await queue.get(handoff.id),
                actor="a",
                expected=State.ASSIGNED,
                target=State.BOT,
                outcome="handback",
                forget_signals=True,
                counts={"ended:handback": 1},
            )
            await step()
            assert back.state == State.BOT
            assert steps == [
                ("new", State.QUEUED),
                ("waiting", State.QUEUED),
                ("assigned", State.ASSIGNED),
                ("assigned", State.ASSIGNED),
                ("waiting", State.QUEUED),
                ("assigned", State.ASSIGNED),
                ("closed", State.BOT),
            ]
            # One "joined" notice per assignment, with the agent's name; the agent's slot is free.
            system = [
                t.text for t in await queue.store.turns(handoff.conversation_id) if t.sender == "system"
            ]
            assert sum("A from our team" in text for text in system) == 2
            assert await queue.agents.loads(["a", "b"]) == {"a": 0, "b": 0}
            assert (await queue.metrics.snapshot())["ended"] == {"handback": 1}

    asyncio.run(main())


def test_a_refused_change_writes_nothing(redis_url):
    async def main() -> None:
        async with opened(redis_url) as queue:
            await add_agent(queue, Agent("a", "A"))
            await add_agent(queue, Agent("b", "B"))
            handoff = await escalate(queue, "v1")
            await queue.claim(handoff.id, "a")
            held = await queue.get(handoff.id)
            before = await queue.client.llen(queue.store.keys.turns(handoff.conversation_id))
            bye = draft_turn(handoff.conversation_id, "system", "bye", "web", "en")
            with pytest.raises(HandoffRefused) as refused:
                await queue.finish(
                    held,
                    actor="b",
                    expected=State.ASSIGNED,
                    target=State.RESOLVED,
                    outcome="resolved",
                    notice_turn=bye,
                )
            assert refused.value.reason == "not_yours"
            with pytest.raises(HandoffRefused) as wrong:
                await queue.finish(
                    held, actor="a", expected=State.QUEUED, target=State.RESOLVED, outcome="closed"
                )
            assert wrong.value.reason == "not_waiting"
            assert (await queue.get(handoff.id)).status == "assigned"
            assert await state_of(queue, handoff) == State.ASSIGNED
            assert await queue.client.llen(queue.store.keys.turns(handoff.conversation_id)) == before
            assert (await queue.metrics.snapshot())["ended"] == {}

    asyncio.run(main())
