"""Scripted conversations that measure escalation, and how a run of them is scored.

A scenario file is JSON Lines, one conversation a line (README, "Scenario files")::

    {"id": "zh-angry-1", "channel": "wechat", "customer": {"id": "c7", "tier": "vip"},
     "turns": ["我的快递怎么还没到", "什么破服务，气死我了"],
     "expect": {"outcome": "human", "reason": "negative_sentiment", "not_before": 2, "by_turn": 2}}

`load_scenarios` reads and validates files, refusing a bad line with its ``file:line`` and the
reason. `score` compares what ``baton simulate`` observed with what each scenario expects and
returns the figures ``baton simulate`` prints, the same figures per language, and one failure
entry per miss.

This module is pure: no service, no store. Rules chosen so that a typo in a benchmark file
cannot silently switch a check off:

- unknown keys are refused (``"by-turn"`` would otherwise be ignored); ``note`` is free text;
- ``channel`` defaults to ``web``, ``customer.id`` to ``scenario-<id>``, ``customer.tier`` to
  ``standard``;
- an outcome ``bot`` takes no ``reason``, ``by_turn`` or ``not_before`` (it is never handed off);
- an outcome ``human`` without ``reason`` accepts any reason and is left out of ``reason_accuracy``;
- an expected intent ``out_of_scope`` is matched by ``out_of_scope`` or ``nlu_fallback``, as in
  ``baton evaluate``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conversations.model import CHANNELS, DEFAULT_TIER
from handoff.signals import EXPLICIT_REQUEST, REASONS
from knowledge_index.model import FALLBACK, LANGUAGES, OUT_OF_SCOPE, has_cjk

OUTCOMES = ("bot", "human")
DEFAULT_CHANNEL = "web"
_TOP_KEYS = frozenset({"id", "channel", "customer", "turns", "expect", "note"})
_EXPECT_KEYS = frozenset({"outcome", "reason", "by_turn", "not_before", "intents"})
_CUSTOMER_KEYS = frozenset({"id", "tier"})
# Predictions that mean "not understood": both satisfy an expected out_of_scope.
_NOT_UNDERSTOOD = frozenset({OUT_OF_SCOPE, FALLBACK})


class ScenarioError(ValueError):
    """A scenario file is unreadable or a line is invalid; the message starts with ``file:line``."""


@dataclass(frozen=True)
class Expectation:
    """What a good support operation does with one conversation.

    Attributes:
        outcome: ``bot`` (never handed off) or ``human``.
        reasons: the acceptable first reasons for the handoff (empty: any, or outcome ``bot``).
        by_turn: the latest customer turn (1-based) at which the handoff must have happened.
        not_before: the earliest customer turn at which a handoff is not premature.
        intents: per customer turn, the intent the bot should understand (None: not checked).
    """

    outcome: str
    reasons: tuple[str, ...] = ()
    by_turn: int | None = None
    not_before: int | None = None
    intents: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """One scripted conversation: who writes, on which channel, what, and what should happen."""

    id: str
    channel: str
    customer_id: str
    tier: str
    turns: tuple[str, ...]
    expect: Expectation
    language: str
    source: str
    note: str = ""


@dataclass
class Observed:
    """What the service did with one scenario.

    Attributes:
        scenario_id: the scenario's id.
        handoff_turn: the 1-based customer turn at which the conversation was handed off, None if never.
        reason: the first reason code the service gave for the handoff.
        intents: per customer turn, the intent the bot understood; None where it did not parse
            the turn (after the handoff, for one). May be shorter than the turns.
    """

    scenario_id: str
    handoff_turn: int | None
    reason: str | None
    intents: list[str | None] = field(default_factory=list)


def load_scenarios(paths: Sequence[Path]) -> list[Scenario]:
    """Read and validate JSON Lines scenario files, in order.

    Blank lines are skipped. Ids must be unique across all the files.

    Raises:
        ScenarioError: naming ``file:line`` and the reason, for the first bad line.
    """
    scenarios: list[Scenario] = []
    first_seen: dict[str, str] = {}
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"{path}: cannot read: {exc}") from exc
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ScenarioError(f"{where}: bad JSON: {exc.msg} (column {exc.colno})") from exc
            scenario = _parse(record, where)
            if scenario.id in first_seen:
                raise ScenarioError(
                    f"{where}: duplicate id {scenario.id!r} (first at {first_seen[scenario.id]})"
                )
            first_seen[scenario.id] = where
            scenarios.append(scenario)
    return scenarios


def _fail(where: str, reason: str) -> ScenarioError:
    return ScenarioError(f"{where}: {reason}")


def _parse(record: Any, where: str) -> Scenario:
    """One decoded line as a `Scenario`, or a `ScenarioError` saying what is wrong."""
    if not isinstance(record, dict):
        raise _fail(where, "a scenario must be a JSON object")
    _no_unknown_keys(record, _TOP_KEYS, "", where)
    for key in ("id", "turns", "expect"):
        if key not in record:
            raise _fail(where, f"missing {key!r}")
    scenario_id = record["id"]
    if not isinstance(scenario_id, str) or not scenario_id.strip():
        raise _fail(where, "'id' must be a non-empty string")
    channel = record.get("channel", DEFAULT_CHANNEL)
    if channel not in CHANNELS:
        raise _fail(where, f"unknown channel {channel!r}; expected one of {', '.join(CHANNELS)}")
    customer_id, tier = _customer(record.get("customer", {}), scenario_id, where)
    turns = _turns(record["turns"], where)
    note = record.get("note", "")
    if not isinstance(note, str):
        raise _fail(where, "'note' must be a string")
    return Scenario(
        id=scenario_id,
        channel=channel,
        customer_id=customer_id,
        tier=tier,
        turns=turns,
        expect=_expectation(record["expect"], len(turns), where),
        language="zh" if any(has_cjk(turn) for turn in turns) else "en",
        source=where,
        note=note,
    )


def _no_unknown_keys(record: dict[str, Any], allowed: frozenset[str], prefix: str, where: str) -> None:
    unknown = sorted(set(record) - allowed)
    if unknown:
        raise _fail(
            where, f"unknown key {prefix}{unknown[0]!r}; expected some of {', '.join(sorted(allowed))}"
        )


def _customer(customer: Any, scenario_id: str, where: str) -> tuple[str, str]:
    if not isinstance(customer, dict):
        raise _fail(where, "'customer' must be an object with 'id' and/or 'tier'")
    _no_unknown_keys(customer, _CUSTOMER_KEYS, "customer.", where)
    customer_id = customer.get("id", f"scenario-{scenario_id}")
    tier = customer.get("tier", DEFAULT_TIER)
    for name, value in (("id", customer_id), ("tier", tier)):
        if not isinstance(value, str) or not value.strip():
            raise _fail(where, f"'customer.{name}' must be a non-empty string")
    return customer_id, tier


def _turns(turns: Any, where: str) -> tuple[str, ...]:
    if not isinstance(turns, list) or not turns:
        raise _fail(where, "'turns' must be a non-empty list of messages")
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, str):
            raise _fail(where, f"turn {number} is not a string")
        if not turn.strip():
            raise _fail(where, f"turn {number} is empty")
    return tuple(turns)


def _turn_number(expect: dict[str, Any], key: str, count: int, where: str) -> int | None:
    value = expect.get(key)
    if value is None:
        return None
    # bool is an int in Python; `true` is a typo, not turn 1.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= count:
        raise _fail(
            where, f"'{key}' must be a turn number from 1 to {count} (the number of turns), not {value!r}"
        )
    return value


def _expectation(expect: Any, count: int, where: str) -> Expectation:
    if not isinstance(expect, dict):
        raise _fail(where, "'expect' must be an object")
    _no_unknown_keys(expect, _EXPECT_KEYS, "expect.", where)
    outcome = expect.get("outcome")
    if outcome not in OUTCOMES:
        raise _fail(where, f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
    reasons = _reasons(expect.get("reason"), where)
    by_turn = _turn_number(expect, "by_turn", count, where)
    not_before = _turn_number(expect, "not_before", count, where)
    if outcome == "bot":
        if reasons:
            raise _fail(where, "a reason is given for outcome 'bot' (the bot keeps the conversation)")
        if by_turn is not None or not_before is not None:
            raise _fail(where, "'by_turn' and 'not_before' only apply to outcome 'human'")
    if by_turn is not None and not_before is not None and not_before > by_turn:
        raise _fail(where, f"'not_before' ({not_before}) is after 'by_turn' ({by_turn})")
    return Expectation(outcome, reasons, by_turn, not_before, _intents(expect.get("intents"), count, where))


def _reasons(reason: Any, where: str) -> tuple[str, ...]:
    if reason is None:
        return ()
    codes = [reason] if isinstance(reason, str) else reason
    if not isinstance(codes, list) or not codes:
        raise _fail(where, "'reason' must be a reason code or a non-empty list of them")
    for code in codes:
        if code not in REASONS:
            raise _fail(where, f"unknown reason code {code!r}; expected one of {', '.join(REASONS)}")
    return tuple(dict.fromkeys(codes))


def _intents(intents: Any, count: int, where: str) -> tuple[str | None, ...]:
    if intents is None:
        return (None,) * count
    if not isinstance(intents, list) or len(intents) != count:
        size = len(intents) if isinstance(intents, list) else "not a list"
        raise _fail(where, f"'intents' must list one entry per turn ({count}), got {size}")
    for number, intent in enumerate(intents, start=1):
        if intent is not None and (not isinstance(intent, str) or not intent.strip()):
            raise _fail(where, f"intent of turn {number} must be an intent name or null")
    return tuple(intents)


@dataclass
class _Verdict:
    """One scenario judged against its observation."""

    scenario: Scenario
    observed: Observed
    problems: list[str] = field(default_factory=list)
    premature: bool = False
    late: bool = False
    reason_ok: bool | None = None  # None: not judged (not handed off, expected bot, or any reason accepted)
    intents_checked: int = 0
    intents_correct: int = 0
    explicit_caught: bool = False

    @property
    def handed_off(self) -> bool:
        return self.observed.handoff_turn is not None

    @property
    def expects_human(self) -> bool:
        return self.scenario.expect.outcome == "human"


def score(scenarios: Sequence[Scenario], observed: Mapping[str, Observed]) -> dict[str, Any]:
    """Score a simulation run against the scenarios' expectations.

    Returns the figures (``automation_rate``, ``escalation_precision``, ``escalation_recall``,
    ``reason_accuracy``, ``premature_escalations``, ``late_escalations``, ``intent_accuracy``), the
    counts behind them, ``explicit_requests`` and ``explicit_caught_on_turn``, ``scenarios``,
    ``by_language`` (the same figures for each language present) and ``failures``: one
    ``{"id", "problem"}`` per miss. A rate whose denominator is empty is 1.0 (nothing was got wrong).

    Raises:
        ValueError: no scenarios, duplicate ids, a scenario missing from ``observed``, or an
            observation that does not fit its scenario (handoff turn or intents beyond its turns).
    """
    if not scenarios:
        raise ValueError("no scenarios to score")
    ids = [s.id for s in scenarios]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate scenario ids")
    missing = [scenario_id for scenario_id in ids if scenario_id not in observed]
    if missing:
        raise ValueError(f"no observation for scenario(s): {', '.join(missing)}")
    verdicts = [_judge(s, observed[s.id]) for s in scenarios]
    result = _figures(verdicts)
    result["by_language"] = {
        language: _figures([v for v in verdicts if v.scenario.language == language])
        for language in LANGUAGES
        if any(v.scenario.language == language for v in verdicts)
    }
    result["failures"] = [
        {"id": v.scenario.id, "problem": problem} for v in verdicts for problem in v.problems
    ]
    return result


def _judge(scenario: Scenario, seen: Observed) -> _Verdict:
    """Compare one observation with its scenario's expectation, noting every miss."""
    count = len(scenario.turns)
    turn = seen.handoff_turn
    if turn is not None and not 1 <= turn <= count:
        raise ValueError(f"{scenario.id}: handoff turn {turn} is outside 1..{count}")
    if len(seen.intents) > count:
        raise ValueError(f"{scenario.id}: {len(seen.intents)} observed intents for {count} turns")
    verdict = _Verdict(scenario, seen)
    expect = scenario.expect
    if verdict.expects_human:
        if turn is None:
            within = f" by turn {expect.by_turn}" if expect.by_turn else ""
            verdict.problems.append(
                f"missed: never handed off, expected a handoff{within} ({_accepted(expect)})"
            )
        else:
            if expect.not_before is not None and turn < expect.not_before:
                verdict.premature = True
                verdict.problems.append(
                    f"premature: handed off at turn {turn}, not before turn {expect.not_before}"
                )
            if expect.by_turn is not None and turn > expect.by_turn:
                verdict.late = True
                verdict.problems.append(f"late: handed off at turn {turn}, expected by turn {expect.by_turn}")
            if expect.reasons:
                verdict.reason_ok = seen.reason in expect.reasons
                if not verdict.reason_ok:
                    verdict.problems.append(
                        f"wrong reason: handed off for {seen.reason!r}, expected {_accepted(expect)}"
                    )
        if EXPLICIT_REQUEST in expect.reasons:
            verdict.explicit_caught = (
                turn is not None
                and seen.reason == EXPLICIT_REQUEST
                and (expect.by_turn is None or turn == expect.by_turn)
            )
    elif turn is not None:
        verdict.problems.append(
            f"false positive: handed off at turn {turn} for {seen.reason!r}, expected the bot to keep it"
        )
    for number, wanted in enumerate(expect.intents, start=1):
        got = seen.intents[number - 1] if number <= len(seen.intents) else None
        if wanted is None or got is None:
            continue  # not checked, or the bot did not parse this turn
        verdict.intents_checked += 1
        if got == wanted or (wanted == OUT_OF_SCOPE and got in _NOT_UNDERSTOOD):
            verdict.intents_correct += 1
        else:
            verdict.problems.append(
                f"wrong intent at turn {number} ({scenario.turns[number - 1]!r}): {got!r}, expected {wanted!r}"
            )
    return verdict


def _accepted(expect: Expectation) -> str:
    return " or ".join(expect.reasons) if expect.reasons else "any reason"


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 1.0


def _figures(verdicts: Sequence[_Verdict]) -> dict[str, Any]:
    """The headline figures and their counts over some judged scenarios."""
    handed = [v for v in verdicts if v.handed_off]
    human = [v for v in verdicts if v.expects_human]
    true_positives = sum(1 for v in handed if v.expects_human)
    judged_reasons = [v for v in verdicts if v.reason_ok is not None]
    checked = sum(v.intents_checked for v in verdicts)
    explicit = [v for v in verdicts if EXPLICIT_REQUEST in v.scenario.expect.reasons]
    return {
        "scenarios": len(verdicts),
        "automation_rate": _rate(len(verdicts) - len(handed), len(verdicts)),
        "escalation_precision": _rate(true_positives, len(handed)),
        "escalation_recall": _rate(true_positives, len(human)),
        "reason_accuracy": _rate(sum(1 for v in judged_reasons if v.reason_ok), len(judged_reasons)),
        "premature_escalations": sum(1 for v in verdicts if v.premature),
        "late_escalations": sum(1 for v in verdicts if v.late),
        "intent_accuracy": _rate(sum(v.intents_correct for v in verdicts), checked),
        "handed_off": len(handed),
        "expected_human": len(human),
        "false_positives": len(handed) - true_positives,
        "missed_escalations": len(human) - true_positives,
        "wrong_reasons": sum(1 for v in judged_reasons if not v.reason_ok),
        "intents_checked": checked,
        "explicit_requests": len(explicit),
        "explicit_caught_on_turn": sum(1 for v in explicit if v.explicit_caught),
    }
