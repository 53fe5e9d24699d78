"""The one place that builds the handoff's running parts, for ``baton serve`` and ``python -m handoff.assigner``."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from conversations.store import ConversationStore
from handoff.agents import AgentDirectory
from handoff.desk import HandoffDesk
from handoff.handoffs import Routing
from handoff.metrics import Metrics
from handoff.queue import HandoffQueue
from handoff.records import Records
from handoff.signal_store import SignalStore
from knowledge_index.handoff_file import HandoffConfig


@dataclass(frozen=True)
class HandoffParts:
    """The queue, the desk and what they share, built on one Redis client and prefix."""

    store: ConversationStore
    queue: HandoffQueue
    desk: HandoffDesk
    agents: AgentDirectory
    metrics: Metrics
    records: Records
    signals: SignalStore


def build_handoff(
    redis: Redis, store: ConversationStore, config: HandoffConfig, *, routing: Routing = "assign"
) -> HandoffParts:
    """The handoff's parts on ``store``'s client and prefix, with a knowledge base's escalation settings."""
    prefix = store.keys.prefix
    queue = HandoffQueue(redis, store, prefix=prefix, config=config, routing=routing)
    records = Records(redis, prefix)
    desk = HandoffDesk(store, queue, queue.agents, queue.metrics, records, config)
    return HandoffParts(store, queue, desk, queue.agents, queue.metrics, records, queue.signals)
