"""``baton simulate``: scripted conversations through the real service, scored against expectations.

The whole service is started in this process (`api.service.Service`: store, NLU, sentiment,
escalation, queue, assigner, desk) on a fresh store in real Redis. Each scenario's customer
sends its turns one by one through the turn pipeline, on the scenario's channel, exactly as a
channel adapter hands them over; the demo agents are online, so handoffs are queued and
assigned for real, and each handed-off conversation is resolved by its agent at the end.
What happened (the turn of the handoff, its first reason, each turn's intent) is read back
from the store and scored by `api.scenarios.score`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

from api.channels.base import InboundMessage
from api.scenarios import Observed, Scenario, score
from api.service import Service
from api.settings import Settings
from bot.trained import TrainedBot
from conversations.states import State
from handoff.routing import match

ADMIT_WAIT_SECONDS = 5.0  # the assigner admits a new handoff within milliseconds; this is a bound


async def run_scenario(service: Service, scenario: Scenario, run_id: str) -> Observed:
    """Play one scenario; what the service did."""
    store = service.store
    external_id = f"{run_id}-{scenario.customer_id}"
    await store.resolve_customer(scenario.channel, external_id, tier=scenario.tier)
    handoff_turn: int | None = None
    reason: str | None = None
    intents: list[str | None] = []
    conversation_id = None
    for number, text in enumerate(scenario.turns, start=1):
        message = InboundMessage(scenario.channel, external_id, text, f"{scenario.id}-{number}")
        accepted = await service.pipeline.accept(message)
        await service.pipeline.reply(accepted)
        conversation_id = accepted.conversation.id
        stored = await store.turns(conversation_id, after_seq=accepted.turn.seq - 1, limit=1)
        intents.append((stored[0].nlu or {}).get("intent") if stored else None)
        conversation = await store.get_conversation(conversation_id)
        if handoff_turn is None and conversation is not None and conversation.handoff_count:
            handoff_turn, reason = number, conversation.last_reason
    if conversation_id is not None:
        await _finish(service, conversation_id)
    return Observed(scenario.id, handoff_turn, reason, intents)


async def _admitted(service: Service, conversation_id: str) -> None:
    """Wait (a few seconds at most) until the service's assigner has admitted the conversation's handoff."""
    deadline = time.monotonic() + ADMIT_WAIT_SECONDS
    while time.monotonic() < deadline:
        handoff = await service.queue.for_conversation(conversation_id)
        if handoff is None or handoff.status != "new":
            return
        await asyncio.sleep(0.02)


async def _finish(service: Service, conversation_id: str) -> None:
    """The agent resolves a handed-off conversation, so the next scenarios find free agents."""
    conversation = await service.store.get_conversation(conversation_id)
    if conversation is None:
        return
    if conversation.state == State.QUEUED:
        await _admitted(service, conversation_id)
        await match(service.queue)
        conversation = await service.store.get_conversation(conversation_id)
    handoff = await service.queue.for_conversation(conversation_id)
    if conversation is None or handoff is None:
        return
    agent = await service.agents.get(handoff.agent_id or "")
    if conversation.state == State.ASSIGNED and agent is not None:
        await service.desk.resolve(conversation_id, agent)
    elif conversation.state == State.QUEUED:
        supervisor = next((a for a in await service.agents.all() if a.role == "supervisor"), None)
        if supervisor is not None:
            await service.desk.close_waiting(conversation_id, supervisor)


async def simulate(
    settings: Settings, bot: TrainedBot, redis_url: str, scenarios: Sequence[Scenario]
) -> dict[str, Any]:
    """Run every scenario through a service started here; the scores, plus run details."""
    run_id = uuid.uuid4().hex[:8]
    service = await Service.start(settings, bot, redis_url)
    try:
        for agent in await service.agents.all():
            await service.agents.set_online(agent.id, True)
        started = time.perf_counter()
        observed = {}
        for scenario in scenarios:
            observed[scenario.id] = await run_scenario(service, scenario, run_id)
        seconds = time.perf_counter() - started
        result = score(scenarios, observed)
        result["run_seconds"] = round(seconds, 1)
        result["stats"] = await service.desk.metrics.snapshot()
        return result
    finally:
        await service.stop()
