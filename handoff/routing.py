"""Routing: which online agent gets which waiting handoff (``BATON_ROUTING=assign``).

An agent qualifies with the handoff's skill and language and a free slot; of those the least
loaded wins, ties to the one whose last assignment is oldest. Every assignment goes through
`handoff.queue.HandoffQueue.claim`, an atomic check-and-set, so concurrent routers (several
assigners, several replicas) never double-assign nor overfill. Under ``broadcast`` routing
nothing is pushed: agents with the skill accept chats themselves, as contact centres do where
agents pick their chats.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from handoff.handoffs import Handoff
from handoff.queue import HandoffQueue

# Called at named points of an assignment ("before_claim"); only fault tests pass one, to stop
# a worker half-way.
Pause = Callable[[str], Awaitable[None]]


async def match(queue: HandoffQueue, limit: int = 200, pause: Pause | None = None) -> list[Handoff]:
    """Assign waiting handoffs, best priority first, to online agents who can take them.

    ``limit`` bounds how many waiting handoffs one call looks at.

    Returns:
        The handoffs this call assigned (none under ``broadcast`` routing).
    """
    if queue.routing == "broadcast":
        return []
    agents = [agent for agent in await queue.agents.online() if agent.max_chats > 0]
    if not agents:
        return []
    ids = [agent.id for agent in agents]
    loads = await queue.agents.loads(ids)
    scores = await queue.client.zmscore(queue.keys.last_assigned, ids)
    last = {agent_id: score or 0.0 for agent_id, score in zip(ids, scores, strict=True)}
    free = {agent.id: agent.max_chats - loads[agent.id] for agent in agents}
    assigned: list[Handoff] = []
    for handoff in await queue.waiting(limit=limit):
        if not any(slots > 0 for slots in free.values()):
            break
        for _ in range(len(agents)):  # at most one try per agent
            candidates = [
                agent
                for agent in agents
                if free[agent.id] > 0 and agent.can_serve(handoff.skill, handoff.language)
            ]
            if not candidates:
                break
            best = min(candidates, key=lambda agent: (loads[agent.id], last[agent.id], agent.id))
            if pause is not None:
                await pause("before_claim")
            result = await queue.claim(handoff.id, best.id)
            if result.ok and result.handoff is not None:
                assigned.append(result.handoff)
                loads[best.id] += 1
                free[best.id] -= 1
                last[best.id] = result.handoff.assigned_at or time.time()
                break
            if result.reason in ("at_capacity", "agent_offline", "unknown_agent"):
                # Someone else filled this agent, or they left: offer the handoff to the next one.
                free[best.id] = 0
                continue
            break  # not_waiting / unknown: another worker took it, or it was closed
    return assigned
