"""The service's parts on their own: the NLU worker's batching and the Redis rate limiter."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest
import redis.asyncio

from api.nlu_worker import NLUWorker
from api.ratelimit import RateLimiter
from bot.nlu.fallback import FallbackEngine
from bot.nlu.types import IntentScore, ParseResult


class RecordingEngine:
    """Parses by echoing; records each batch and the thread it ran on. Blocks until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()
        self.release = threading.Event()

    def parse_batch(self, texts: Sequence[str]) -> list[ParseResult]:
        self.release.wait(5)
        self.batches.append(list(texts))
        self.threads.add(threading.current_thread().name)
        if "boom" in texts:
            raise RuntimeError("engine failed")
        return [ParseResult(t, "en", IntentScore(t.upper(), 1.0)) for t in texts]


def test_messages_that_arrive_together_are_parsed_in_batches_on_one_thread():
    engine = RecordingEngine()
    worker = NLUWorker(engine, batch_size=3)

    async def main() -> list[str]:
        first = asyncio.ensure_future(worker.parse("a"))  # starts a batch of one at once
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(worker.parse(t)) for t in "bcdef"]  # wait behind it
        await asyncio.sleep(0.05)
        engine.release.set()
        results = await asyncio.gather(first, *rest)
        return [r.intent.name for r in results]

    try:
        assert asyncio.run(main()) == list("ABCDEF")  # each caller gets its own result
    finally:
        worker.close()
    assert engine.batches == [["a"], ["b", "c", "d"], ["e", "f"]]
    assert len(engine.threads) == 1 and next(iter(engine.threads)).startswith("baton-nlu")


def test_an_engine_failure_reaches_the_callers_of_that_batch_only():
    engine = RecordingEngine()
    engine.release.set()
    worker = NLUWorker(engine)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="engine failed"):
            await worker.parse("boom")
        assert (await worker.parse("fine")).intent.name == "FINE"

    try:
        asyncio.run(main())
    finally:
        worker.close()


def test_the_rate_limit_counts_per_customer_in_a_sliding_window(redis_url):
    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        try:
            limiter = RateLimiter(client, "test:", limit=3, window=0.5)
            assert [await limiter.hit("c1") for _ in range(3)] == [0, 0, 0]
            wait = await limiter.hit("c1")
            assert 0 < wait <= 0.5
            assert await limiter.hit("c2") == 0  # another customer has their own window
            await asyncio.sleep(wait + 0.05)
            assert await limiter.hit("c1") == 0  # the oldest message left the window
        finally:
            await client.aclose()

    asyncio.run(main())


def test_a_repeated_message_is_answered_from_the_cache_and_the_cache_is_bounded():
    engine = RecordingEngine()
    engine.release.set()
    worker = NLUWorker(engine, cache_size=2)

    async def main() -> list[str]:
        return [(await worker.parse(t)).intent.name for t in ["a", "a", "b", "c", "a"]]

    try:
        assert asyncio.run(main()) == ["A", "A", "B", "C", "A"]
    finally:
        worker.close()
    # "a" the second time came from the cache; by the fifth call b and c had pushed it out.
    assert engine.batches == [["a"], ["b"], ["c"], ["a"]]
    assert (worker.hits, worker.misses) == (1, 4)


class Down(Exception):
    pass


class Named:
    """Answers every text with its own name as the intent, or raises `Down` while ``failing``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failing = False

    def parse_batch(self, texts: Sequence[str]) -> list[ParseResult]:
        if self.failing:
            raise Down(self.name)
        return [ParseResult(t, "en", IntentScore(self.name, 1.0)) for t in texts]


def test_a_stand_in_parse_is_not_cached_so_rasa_understands_the_message_once_back():
    rasa, baton = Named("rasa"), Named("baton")
    engine = FallbackEngine(rasa, baton, (Down,), retry_seconds=0)
    worker = NLUWorker(engine)

    async def main() -> list[str]:
        rasa.failing = True
        first = (await worker.parse("hello")).intent.name
        rasa.failing = False
        return [first, (await worker.parse("hello")).intent.name, (await worker.parse("hello")).intent.name]

    try:
        assert asyncio.run(main()) == ["baton", "rasa", "rasa"]
    finally:
        worker.close()
    assert (worker.hits, worker.misses) == (1, 2)  # Rasa's parse was kept, the stand-in's was not
