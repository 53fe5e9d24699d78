"""Support figures: ``/api/v1/stats`` (JSON) and ``/metrics`` (Prometheus text format).

Counters come from `handoff.metrics` (counted in Redis as conversations happen); the live
figures (queue length, longest wait, agents online and their load) are read at request time.
Neither carries customer data, so both are open like ``/healthz``; put them behind the
network's access rules in production.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse

from api.errors import ApiError
from api.service import Service
from bot.nlu.fallback import FallbackEngine
from handoff.metrics import prometheus

router = APIRouter(tags=["stats"])
DAY = re.compile(r"^(today|\d{4}-\d{2}-\d{2})$")
AUTOMATION_BAND = (0.6, 0.7)  # the share of conversations Baton aims to finish with no human


async def live_figures(service: Service) -> dict[str, Any]:
    """Queue length, tickets, longest wait, agents online and chats in progress, now."""
    waiting = await service.queue.waiting(None, limit=10_000)
    now = time.time()
    online = await service.agents.online()
    loads = await service.agents.loads([agent.id for agent in online])
    return {
        "queue_length": len(waiting),
        "tickets_waiting": sum(1 for h in waiting if h.ticket),
        "longest_wait_seconds": round(max((now - h.created_at for h in waiting), default=0.0), 1),
        "agents_online": len(online),
        "chats_in_progress": sum(loads.values()),
        "agent_load": loads,
        **nlu_figures(service),
    }


def nlu_figures(service: Service) -> dict[str, Any]:
    """Which engine understands messages and, with Rasa, how often Baton's engine stood in
    (counted by this process since it started)."""
    engine = service.nlu.engine
    if not isinstance(engine, FallbackEngine):
        return {"nlu_engine": "baton"}
    return {
        "nlu_engine": "rasa",
        "nlu_rasa_down": int(engine.primary_down),
        "nlu_rasa_failures": engine.failures_seen,
        "nlu_fallback_parses": engine.fallbacks,
    }


@router.get("/api/v1/stats")
async def stats(
    request: Request,
    day: Annotated[
        str | None, Query(description="a UTC day YYYY-MM-DD or 'today'; empty: since the start")
    ] = None,
) -> dict[str, Any]:
    """Conversations, automation rate, handoffs by reason / channel / language, waits, first
    responses, breaches and ratings, plus the live queue and agents."""
    if day is not None and not DAY.match(day):
        raise ApiError(400, "bad_request", "day must be YYYY-MM-DD or 'today'")
    service: Service = request.app.state.service
    figures = await service.desk.metrics.snapshot(day)
    return {
        "day": day,
        **figures,
        "automation_target": {"low": AUTOMATION_BAND[0], "high": AUTOMATION_BAND[1]},
        "live": await live_figures(service),
    }


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    """The same figures for Prometheus."""
    service: Service = request.app.state.service
    live = await live_figures(service)
    gauges = {k: v for k, v in live.items() if isinstance(v, int | float)}
    text = prometheus(await service.desk.metrics.snapshot(), gauges)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
