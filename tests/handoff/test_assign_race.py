"""50 escalations racing over 5 agents while 2 assigners run at once, each in its own thread,
event loop and Redis client (as two processes would): nothing lost, nothing assigned twice,
no agent ever over capacity.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

from redis.asyncio import Redis

from conversations.states import State
from conversations.store import ConversationStore
from handoff.agents import Agent
from handoff.assigner import Assigner
from handoff.handoffs import Handoff, HandoffRequest
from handoff.parts import build_handoff
from handoff.queue import HandoffQueue
from knowledge_index.handoff_file import HandoffConfig

PREFIX = "t-race:"
AGENTS = 5
MAX_CHATS = 8  # 40 slots for 50 chats: 10 must wait
ESCALATIONS = 50
DEADLINE_S = 60.0


class Worker(threading.Thread):
    """One assigner calling `Assigner.step` in a loop, checking every agent's load after each round."""

    def __init__(self, redis_url: str, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.redis_url = redis_url
        self.stop = threading.Event()
        self.rounds = 0
        self.assigned = 0
        self.over_capacity: list[dict[str, int]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc

    async def _main(self) -> None:
        client = Redis.from_url(self.redis_url, decode_responses=True)
        try:
            desk = build_handoff(client, ConversationStore(client, prefix=PREFIX), HandoffConfig())
            queue = desk.queue
            assigner = Assigner(desk, self.name, block_ms=20, reclaim_idle_ms=60_000)
            ids = [f"agent{n}" for n in range(AGENTS)]
            deadline = time.monotonic() + DEADLINE_S
            for _ in range(20_000):  # bounded in count and in time
                if self.stop.is_set() or time.monotonic() > deadline:
                    break
                self.assigned += await assigner.step()
                self.rounds += 1
                loads = await queue.agents.loads(ids)
                if any(load > MAX_CHATS for load in loads.values()):
                    self.over_capacity.append(loads)
        finally:
            await client.aclose()


async def escalate(store: ConversationStore, queue: HandoffQueue, n: int) -> str | None:
    """Two replicas see the same customer message and both try to escalate, twice each (as a
    retry would); exactly one wins. Returns the handoff id of the winner."""
    customer = await store.resolve_customer("web", f"race-{n}", tier="vip" if n % 7 == 0 else None)
    conversation = await store.current_conversation(customer.id, "web", "zh" if n % 2 else "en")

    request = HandoffRequest(
        conversation_id=conversation.id,
        customer_id=customer.id,
        channel="web",
        language=conversation.language or "en",
        skill="general",
        reasons=("negative_sentiment",),
        severity=1 + n % 3,
        vip=customer.tier == "vip",
    )
    outcomes = await asyncio.gather(
        *(queue.escalate(request, "negative_sentiment", first=True) for _ in range(4))
    )
    winners = [outcome.id for outcome in outcomes if outcome is not None]
    assert len(winners) == 1
    return winners[0]


async def wait_for(queue: HandoffQueue, ids: list[str], assigned: int, closed: int) -> list[Handoff]:
    """Poll (bounded) until ``assigned`` handoffs are assigned, ``closed`` closed and all admitted."""
    deadline = time.monotonic() + DEADLINE_S
    handoffs: list[Handoff] = []
    for _ in range(3000):
        handoffs = [h for h in [await queue.get(i) for i in ids] if h is not None]
        counts = Counter(h.status for h in handoffs)
        if counts["assigned"] == assigned and counts["closed"] == closed and not counts["new"]:
            return handoffs
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting: {Counter(h.status for h in handoffs)}")


def test_fifty_escalations_two_assigners(redis_url):
    workers = [Worker(redis_url, "assigner-a"), Worker(redis_url, "assigner-b")]

    async def main() -> None:
        # All 50 escalations at once send up to 200 commands at once: more than the default pool of 100.
        client = Redis.from_url(redis_url, decode_responses=True, max_connections=256)
        try:
            queue = HandoffQueue(client, prefix=PREFIX)
            store = queue.store
            for n in range(AGENTS):
                agent = Agent(
                    f"agent{n}",
                    f"Agent {n}",
                    skills=("general",),
                    languages=("zh", "en"),
                    max_chats=MAX_CHATS,
                )
                await queue.agents.create(agent, f"pw-{n}")
                await queue.agents.set_online(agent.id, True)
            await queue.ensure_group()
            for worker in workers:
                worker.start()

            ids = await asyncio.gather(*(escalate(store, queue, n) for n in range(ESCALATIONS)))
            assert len(set(ids)) == ESCALATIONS

            # Capacity 40: 40 assigned, 10 waiting, none lost.
            handoffs = await wait_for(queue, ids, assigned=AGENTS * MAX_CHATS, closed=0)
            assert Counter(h.status for h in handoffs) == {"assigned": 40, "waiting": 10}
            loads = await queue.agents.loads([f"agent{n}" for n in range(AGENTS)])
            assert loads == {f"agent{n}": MAX_CHATS for n in range(AGENTS)}

            # Ten chats end (two per agent): the ten waiting ones take their places.
            ending = []
            for n in range(AGENTS):
                ending += (await queue.assigned_to(f"agent{n}"))[:2]
            for handoff in ending:
                await queue.finish(
                    handoff, actor="", expected=State.ASSIGNED, target=State.RESOLVED, outcome="resolved"
                )
            handoffs = await wait_for(queue, ids, assigned=40, closed=10)
            assert await queue.waiting() == []

            # Exactly one assignment per handoff, and the conversations agree with the queue.
            entries = await client.xrange(queue.keys.audit)
            per_handoff = Counter(f["handoff_id"] for _id, f in entries if f["type"] == "assigned")
            assert per_handoff == dict.fromkeys(ids, 1)
            for handoff in handoffs:
                conversation = await store.get_conversation(handoff.conversation_id)
                expected = State.RESOLVED if handoff.status == "closed" else State.ASSIGNED
                assert conversation.state == expected, handoff
                assert conversation.handoff_count == 1
            for n in range(AGENTS):
                held = await client.smembers(queue.keys.chats(f"agent{n}"))
                assert held == {
                    h.id for h in handoffs if h.status == "assigned" and h.agent_id == f"agent{n}"
                }
                assert len(held) == MAX_CHATS
            assert await client.xpending(queue.keys.stream, "assigners") == {
                "pending": 0,
                "min": None,
                "max": None,
                "consumers": [],
            }
        finally:
            for worker in workers:
                worker.stop.set()
            for worker in workers:
                worker.join(timeout=30)
            await client.aclose()

    asyncio.run(main())
    for worker in workers:
        assert not worker.is_alive(), f"{worker.name} hung"
        assert worker.error is None, worker.error
        assert worker.over_capacity == [], f"{worker.name} saw {worker.over_capacity}"
        assert worker.rounds > 0
    assert sum(worker.assigned for worker in workers) == ESCALATIONS
