"""The stand-in engine: Baton's engine answers whenever the first engine (Rasa) cannot."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from bot.nlu.fallback import FallbackEngine
from bot.nlu.types import IntentScore, ParseResult


class Down(Exception):
    """What the first engine raises when it cannot answer."""


class Engine:
    """Answers every text with its own name as the intent; fails while ``failing``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failing = False
        self.calls: list[str] = []

    def parse_batch(self, texts: Sequence[str]) -> list[ParseResult]:
        self.calls += texts
        if self.failing:
            raise Down(f"{self.name} is down")
        return [ParseResult(t, "en", IntentScore(self.name, 1.0)) for t in texts]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def parts():
    rasa, baton, clock = Engine("rasa"), Engine("baton"), Clock()
    engine = FallbackEngine(rasa, baton, (Down,), retry_seconds=10, name="rasa", clock=clock)
    return engine, rasa, baton, clock


def test_the_first_engine_answers_while_it_can(parts):
    engine, _rasa, baton, _ = parts
    assert [r.intent.name for r in engine.parse_batch(["a", "b"])] == ["rasa", "rasa"]
    assert baton.calls == [] and engine.fallbacks == 0


def test_a_failure_hands_the_rest_of_the_batch_to_the_stand_in_and_counts_it(parts, caplog):
    engine, rasa, _baton, _ = parts
    rasa.failing = True
    with caplog.at_level(logging.WARNING, logger="bot.nlu.fallback"):
        results = engine.parse_batch(["a", "b", "c"])
    assert [r.intent.name for r in results] == ["baton", "baton", "baton"]
    assert [r.text for r in results] == ["a", "b", "c"]
    assert rasa.calls == ["a"]  # not tried again for b and c: it is resting
    assert engine.fallbacks == 3 and engine.failures_seen == 1 and engine.primary_down
    assert "rasa failed (rasa is down)" in caplog.text


def test_the_first_engine_rests_then_is_tried_again_and_recovers(parts, caplog):
    engine, rasa, _, clock = parts
    rasa.failing = True
    engine.parse("a")
    rasa.failing = False
    clock.now += 9
    assert engine.parse("b").intent.name == "baton"  # still resting: no request, no timeout to wait for
    assert rasa.calls == ["a"]
    clock.now += 1
    with caplog.at_level(logging.WARNING, logger="bot.nlu.fallback"):
        assert engine.parse("c").intent.name == "rasa"
    assert not engine.primary_down and engine.fallbacks == 2
    assert "answers again" in caplog.text


def test_a_failure_midway_keeps_what_was_understood_in_order(parts):
    engine, rasa, baton, _ = parts

    def flaky(texts: Sequence[str]) -> list[ParseResult]:
        if texts[0] == "b":
            raise Down("gone")
        return Engine.parse_batch(rasa, texts)

    rasa.parse_batch = flaky  # type: ignore[method-assign]
    results = engine.parse_batch(["a", "b", "c"])
    assert [(r.text, r.intent.name) for r in results] == [("a", "rasa"), ("b", "baton"), ("c", "baton")]
    assert baton.calls == ["b", "c"] and engine.fallbacks == 2


def test_an_unexpected_error_is_not_hidden(parts):
    engine, rasa, _, _ = parts

    def broken(texts: Sequence[str]) -> list[ParseResult]:
        raise ZeroDivisionError

    rasa.parse_batch = broken  # type: ignore[method-assign]
    with pytest.raises(ZeroDivisionError):
        engine.parse("a")
