"""Support metrics, counted in Redis as conversations happen, for ``/metrics`` and ``/api/v1/stats``.

Every count goes to two hashes: ``P metrics:total`` (since the store began) and
``P metrics:day:{YYYY-MM-DD}`` (UTC, kept 8 days) for the supervisor's "today". Counting in
Redis keeps the figures right with several API replicas and across restarts.

The automation rate is the share of conversations in which the customer wrote at least once
that were never handed to a person: ``1 - handed_off / conversations``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from conversations.keys import DEFAULT_PREFIX

DAY_SECONDS_KEPT = 8 * 86400
BUCKETS = (5, 10, 30, 60, 120, 300, 600)  # seconds, for waiting and first-response times


def _day(moment: float | None = None) -> str:
    return datetime.fromtimestamp(moment if moment is not None else time.time(), UTC).strftime("%Y-%m-%d")


Counts = dict[str, float]  # metric name -> amount: an int is counted with HINCRBY, a float with HINCRBYFLOAT


def started_counts(channel: str, language: str | None) -> Counts:
    """A conversation got its first customer message."""
    return {
        "conversations": 1,
        f"conversations_channel:{channel}": 1,
        f"conversations_language:{language or 'unknown'}": 1,
    }


def handoff_counts(reason: str, channel: str, language: str | None, first: bool) -> Counts:
    """A conversation went to the queue; ``first`` when it is its first handoff."""
    counts: Counts = {
        "handoffs": 1,
        f"handoffs_reason:{reason}": 1,
        f"handoffs_channel:{channel}": 1,
        f"handoffs_language:{language or 'unknown'}": 1,
    }
    if first:
        counts["conversations_handed_off"] = 1
    return counts


def observation(name: str, seconds: float) -> Counts:
    """One observation of a duration: its count, sum and histogram buckets."""
    counts: Counts = {f"{name}_count": 1, f"{name}_sum": float(seconds)}
    for bound in BUCKETS:
        if seconds <= bound:
            counts[f"{name}_le:{bound}"] = 1
    return counts


def ended_counts(outcome: str) -> Counts:
    """An agent's chat ended: ``resolved``, ``handback`` or ``closed``."""
    return {f"ended:{outcome}": 1}


def counts_arg(counts: Counts) -> str:
    """Counts as the handoff scripts take them (`handoff.scripts`): ``[[name, amount, is_float]...]``."""
    return json.dumps([[name, amount, isinstance(amount, float)] for name, amount in counts.items()])


class Metrics:
    """Counters of conversations, handoffs, waits, first responses and ratings.

    Args:
        client: a ``redis.asyncio.Redis`` with ``decode_responses=True``.
        prefix: the key prefix shared with the store.
    """

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix

    def hashes(self, moment: float | None = None) -> tuple[str, str]:
        """The two hashes every count goes to: all time, and the UTC day of ``moment`` (now)."""
        return f"{self.prefix}metrics:total", f"{self.prefix}metrics:day:{_day(moment)}"

    async def add(self, counts: Counts) -> None:
        """Add ``counts`` to both hashes."""
        total, today = self.hashes()
        async with self.client.pipeline(transaction=False) as pipe:
            for key in (total, today):
                for name, amount in counts.items():
                    if isinstance(amount, int):
                        pipe.hincrby(key, name, amount)
                    else:
                        pipe.hincrbyfloat(key, name, amount)
            pipe.expire(today, DAY_SECONDS_KEPT)
            await pipe.execute()

    async def conversation_started(self, channel: str, language: str | None) -> None:
        """A conversation got its first customer message."""
        await self.add(started_counts(channel, language))

    async def rated(self, score: int) -> None:
        """A customer rated a conversation 1-5."""
        await self.add({"ratings": 1, "ratings_sum": score, f"rating:{score}": 1})

    async def snapshot(self, day: str | None = None) -> dict[str, Any]:
        """The figures since the start, or of one UTC ``day`` (``YYYY-MM-DD``; ``today`` allowed)."""
        if day == "today":
            day = _day()
        key = f"{self.prefix}metrics:day:{day}" if day else f"{self.prefix}metrics:total"
        raw = await self.client.hgetall(key)
        return summarize(raw)


def _number(text: str) -> float:
    value = float(text)
    return int(value) if value.is_integer() else value


def _grouped(raw: Mapping[str, str], prefix: str) -> dict[str, float]:
    return {name.split(":", 1)[1]: _number(v) for name, v in raw.items() if name.startswith(prefix + ":")}


def _distribution(raw: Mapping[str, str], name: str) -> dict[str, Any]:
    count = int(_number(raw.get(f"{name}_count", "0")))
    total = float(raw.get(f"{name}_sum", "0"))
    return {
        "count": count,
        "sum_seconds": round(total, 3),
        "average_seconds": round(total / count, 3) if count else None,
        "buckets": {str(b): int(_number(raw.get(f"{name}_le:{b}", "0"))) for b in BUCKETS},
    }


def summarize(raw: Mapping[str, str]) -> dict[str, Any]:
    """The stats document from a metrics hash."""
    conversations = int(_number(raw.get("conversations", "0")))
    handed_off = int(_number(raw.get("conversations_handed_off", "0")))
    ratings = int(_number(raw.get("ratings", "0")))
    return {
        "conversations": conversations,
        "conversations_by_channel": _grouped(raw, "conversations_channel"),
        "conversations_by_language": _grouped(raw, "conversations_language"),
        "conversations_handed_off": handed_off,
        "automation_rate": round(1 - handed_off / conversations, 4) if conversations else None,
        "handoffs": int(_number(raw.get("handoffs", "0"))),
        "handoffs_by_reason": _grouped(raw, "handoffs_reason"),
        "handoffs_by_channel": _grouped(raw, "handoffs_channel"),
        "handoffs_by_language": _grouped(raw, "handoffs_language"),
        "waiting_time": _distribution(raw, "wait"),
        "first_response_time": _distribution(raw, "first_response"),
        "first_response_breaches": int(_number(raw.get("first_response_breaches", "0"))),
        "ended": _grouped(raw, "ended"),
        "ratings": {
            "count": ratings,
            "average": round(float(raw.get("ratings_sum", "0")) / ratings, 3) if ratings else None,
            "by_score": {str(n): int(_number(raw.get(f"rating:{n}", "0"))) for n in range(1, 6)},
        },
    }


def _labels(name: str, values: Mapping[str, float], label: str) -> Iterable[str]:
    for key, value in sorted(values.items()):
        yield f'{name}{{{label}="{_escape(key)}"}} {value}'


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(stats: Mapping[str, Any], live: Mapping[str, float]) -> str:
    """``stats`` (`summarize`) and live gauges (queue length, agents online...) in Prometheus text format."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: Iterable[str]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples)

    metric(
        "baton_conversations_total",
        "counter",
        "Conversations in which the customer wrote at least once.",
        [f"baton_conversations_total {stats['conversations']}"],
    )
    metric(
        "baton_conversations_handed_off_total",
        "counter",
        "Conversations handed to a person at least once.",
        [f"baton_conversations_handed_off_total {stats['conversations_handed_off']}"],
    )
    rate = stats["automation_rate"]
    metric(
        "baton_automation_rate",
        "gauge",
        "Share of conversations that ended with no human (0-1).",
        [f"baton_automation_rate {rate if rate is not None else 'NaN'}"],
    )
    metric(
        "baton_handoffs_total",
        "counter",
        "Handoffs by first reason.",
        _labels("baton_handoffs_total", stats["handoffs_by_reason"], "reason"),
    )
    metric(
        "baton_handoffs_by_channel_total",
        "counter",
        "Handoffs by channel.",
        _labels("baton_handoffs_by_channel_total", stats["handoffs_by_channel"], "channel"),
    )
    metric(
        "baton_handoffs_by_language_total",
        "counter",
        "Handoffs by language.",
        _labels("baton_handoffs_by_language_total", stats["handoffs_by_language"], "language"),
    )
    for name, key, help_text in (
        ("baton_waiting_seconds", "waiting_time", "Time from handoff to an agent taking it."),
        (
            "baton_first_response_seconds",
            "first_response_time",
            "Time from handoff to the agent's first message.",
        ),
    ):
        dist = stats[key]
        samples = [f'{name}_bucket{{le="{b}"}} {n}' for b, n in dist["buckets"].items()]
        samples += [
            f'{name}_bucket{{le="+Inf"}} {dist["count"]}',
            f"{name}_sum {dist['sum_seconds']}",
            f"{name}_count {dist['count']}",
        ]
        metric(name, "histogram", help_text, samples)
    metric(
        "baton_first_response_breaches_total",
        "counter",
        "Handoffs not answered within the first-response time.",
        [f"baton_first_response_breaches_total {stats['first_response_breaches']}"],
    )
    metric(
        "baton_ratings_total",
        "counter",
        "Customer ratings by score.",
        _labels("baton_ratings_total", stats["ratings"]["by_score"], "score"),
    )
    for name, value in sorted(live.items()):
        metric(f"baton_{name}", "gauge", name.replace("_", " ").capitalize() + ".", [f"baton_{name} {value}"])
    return "\n".join(lines) + "\n"
