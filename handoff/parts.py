"""The one place that builds the handoff's running parts, for ``baton serve`` and ``python -m handoff.assigner``."""

from __future__ import annotations

from redis.asyncio import Redis

from conversations.store import ConversationStore
from handoff.desk import HandoffDesk
from handoff.handoffs import Routing
from handoff.queue import HandoffQueue
from handoff.records import Records
from knowledge_index.handoff_file import HandoffConfig


def build_handoff(
    redis: Redis, store: ConversationStore, config: HandoffConfig, *, routing: Routing = "assign"
) -> HandoffDesk:
    """The handoff desk on ``store``'s client and prefix, with a knowledge base's escalation settings.

    The desk holds the rest: its queue (``desk.queue``, with the agents, metrics and signals it
    shares), the agent directory and the records.
    """
    prefix = store.keys.prefix
    queue = HandoffQueue(redis, store, prefix=prefix, config=config, routing=routing)
    return HandoffDesk(store, queue, queue.agents, queue.metrics, Records(redis, prefix), config)
