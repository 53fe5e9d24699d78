"""Metrics counted in real Redis, the stats document and its Prometheus rendering."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from handoff.metrics import Metrics, ended_counts, handoff_counts, observation, prometheus
from handoff.records import Records


async def _fill(url: str) -> tuple[dict, dict]:
    client = Redis.from_url(url, decode_responses=True)
    try:
        metrics = Metrics(client, "t:")
        for channel in ("web", "web", "app", "wechat"):
            await metrics.conversation_started(channel, "zh" if channel == "wechat" else "en")
        await metrics.add(handoff_counts("negative_sentiment", "web", "en", first=True))
        # The same conversation again:
        await metrics.add(handoff_counts("explicit_request", "web", "en", first=False))
        await metrics.add(observation("wait", 12.5))
        await metrics.add(observation("first_response", 4.0))
        await metrics.add({"first_response_breaches": 1})
        await metrics.rated(5)
        await metrics.rated(2)
        await metrics.add(ended_counts("resolved"))
        return await metrics.snapshot(), await metrics.snapshot("today")
    finally:
        await client.aclose()


def test_counts_add_up_and_today_equals_total_on_a_fresh_store(redis_url):
    total, today = asyncio.run(_fill(redis_url))
    assert total == today
    assert total["conversations"] == 4
    assert total["conversations_by_channel"] == {"web": 2, "app": 1, "wechat": 1}
    assert (
        total["conversations_handed_off"] == 1
    )  # a second handoff of one conversation is not a second conversation
    assert total["automation_rate"] == 0.75
    assert total["handoffs"] == 2
    assert total["handoffs_by_reason"] == {"negative_sentiment": 1, "explicit_request": 1}
    assert total["waiting_time"]["count"] == 1 and total["waiting_time"]["average_seconds"] == 12.5
    assert total["waiting_time"]["buckets"]["10"] == 0 and total["waiting_time"]["buckets"]["30"] == 1
    assert total["first_response_breaches"] == 1
    assert total["ratings"] == {
        "count": 2,
        "average": 3.5,
        "by_score": {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1},
    }
    assert total["ended"] == {"resolved": 1}


def test_an_empty_store_has_no_automation_rate_rather_than_a_made_up_one(redis_url):
    async def empty() -> dict:
        client = Redis.from_url(redis_url, decode_responses=True)
        try:
            return await Metrics(client, "t:").snapshot()
        finally:
            await client.aclose()

    stats = asyncio.run(empty())
    assert stats["conversations"] == 0 and stats["automation_rate"] is None


def test_prometheus_text_has_help_type_and_labelled_samples(redis_url):
    total, _ = asyncio.run(_fill(redis_url))
    text = prometheus(total, {"queue_length": 3, "agents_online": 2})
    lines = text.splitlines()
    assert "# TYPE baton_conversations_total counter" in lines
    assert "baton_conversations_total 4" in lines
    assert 'baton_handoffs_total{reason="negative_sentiment"} 1' in lines
    assert 'baton_waiting_seconds_bucket{le="+Inf"} 1' in lines
    assert "baton_queue_length 3" in lines
    assert "baton_automation_rate 0.75" in lines
    for line in lines:  # every sample is "name{labels} value" with a number
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_a_rating_is_kept_once_and_notes_stay_in_order(redis_url):
    async def scenario() -> tuple:
        client = Redis.from_url(redis_url, decode_responses=True)
        try:
            records = Records(client, "t:")
            first = await records.rate("c1", 4)
            second = await records.rate("c1", 1)
            await records.add_note("c1", "alice", "called the carrier")
            await records.add_note("c1", "bob", "refund approved")
            return first, second, await records.rating("c1"), [n["text"] for n in await records.notes("c1")]
        finally:
            await client.aclose()

    first, second, rating, notes = asyncio.run(scenario())
    assert (first, second, rating) == (True, False, 4)
    assert notes == ["called the carrier", "refund approved"]
