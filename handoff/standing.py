"""Where a waiting handoff stands in its skill's queue, and about how long it will wait."""

from __future__ import annotations

import math

from handoff.handoffs import QueueStanding, priority_order
from handoff.queue import HandoffQueue

NOT_WAITING = QueueStanding(None, None, None, None)


async def standing(queue: HandoffQueue, handoff_id: str) -> QueueStanding:
    """The handoff's position among the waiting handoffs of its skill, and the wait estimate.

    The estimate is 0 while an agent who could take it has a free slot for it; otherwise the
    chats ahead of it beyond the free slots, times ``average_handle_seconds``, shared by the
    slots of the online agents with the skill and language; None while nobody who could take
    it is online. Every field is None when the handoff is not waiting.
    """
    handoff = await queue.get(handoff_id)
    if handoff is None or handoff.status != "waiting":
        return NOT_WAITING
    key = queue.keys.waiting(handoff.skill)
    score = await queue.client.zscore(key, handoff_id)
    if score is None:  # claimed or closed since the read above
        return NOT_WAITING
    async with queue.client.pipeline(transaction=False) as pipe:
        pipe.zcount(key, "-inf", f"({score!r}")
        pipe.zrangebyscore(key, score, score)
        pipe.zcard(key)
        ahead, tied, waiting = await pipe.execute()
    # Equal scores: the older one goes first, as in routing.
    ahead += sum(1 for h in await queue.many(tied) if priority_order(h) < priority_order(handoff))
    position = ahead + 1
    servers = [a for a in await queue.agents.online() if a.can_serve(handoff.skill, handoff.language)]
    loads = await queue.agents.loads([a.id for a in servers])
    capacity = sum(a.max_chats for a in servers)
    free = sum(max(0, a.max_chats - loads[a.id]) for a in servers)
    if capacity == 0:
        estimate = None
    elif free >= position:
        estimate = 0
    else:
        estimate = math.ceil((position - free) * queue.average_handle_seconds / capacity)
    return QueueStanding(position, int(waiting), len(servers), estimate)
