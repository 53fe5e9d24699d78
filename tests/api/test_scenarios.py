"""Escalation scenarios: the files in bench/scenarios are valid and balanced; loading refuses bad lines; scoring."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from api.scenarios import (
    REASONS,
    Expectation,
    Observed,
    Scenario,
    ScenarioError,
    load_scenarios,
    score,
)
from knowledge_index.loader import load_kb
from tests.conftest import DEFAULT_KB, ROOT

SCENARIO_FILES = sorted((ROOT / "bench" / "scenarios").glob("*.jsonl"))
GOOD = {
    "id": "en-ok-1",
    "channel": "web",
    "turns": ["hi", "where is LM2024051234?", "thanks"],
    "expect": {"outcome": "bot"},
}


@pytest.fixture(scope="module")
def bench() -> list[Scenario]:
    return load_scenarios(SCENARIO_FILES)


def test_bench_files_load_and_are_balanced(bench):
    assert SCENARIO_FILES, "no bench/scenarios/*.jsonl"
    assert len(bench) >= 80
    languages = Counter(s.language for s in bench)
    assert languages["zh"] >= 0.4 * len(bench) and languages["en"] >= 0.4 * len(bench)
    bot_share = sum(s.expect.outcome == "bot" for s in bench) / len(bench)
    assert 0.35 <= bot_share <= 0.55
    assert {s.channel for s in bench} == {"web", "app", "wechat"}
    assert any(s.tier == "vip" for s in bench)
    # An id says its language ("zh-..."/"en-..."), so a mislabelled conversation shows up here.
    assert [s.id for s in bench if not s.id.startswith(f"{s.language}-")] == []


def test_bench_has_mild_negative_conversations_that_stay_with_the_bot(bench):
    mild = [s for s in bench if "-mild-" in s.id]
    assert len(mild) >= 15
    assert {s.language for s in mild} == {"zh", "en"}
    assert all(s.expect.outcome == "bot" for s in mild)


def test_bench_covers_every_reason_in_both_languages(bench):
    present = {(s.language, reason) for s in bench for reason in s.expect.reasons}
    missing = [
        (language, reason)
        for language in ("zh", "en")
        for reason in REASONS
        if (language, reason) not in present
    ]
    assert missing == []


def test_bench_expectations_follow_the_rules_of_the_brief(bench):
    for s in bench:
        if s.expect.outcome == "human":
            assert s.expect.by_turn is not None and s.expect.not_before is not None, s.id
        if s.expect.reasons == ("explicit_request",):
            # The request must be caught on its own turn: not earlier, not later.
            assert s.expect.not_before == s.expect.by_turn, s.id
        if "too_many_turns" in s.expect.reasons:
            assert len(s.turns) >= 9 and s.expect.by_turn == 9, s.id
    customers = Counter(s.customer_id for s in bench)
    assert [c for c, n in customers.items() if n > 1] == []


def test_bench_intents_exist_in_the_knowledge_base(bench):
    known = set(load_kb(DEFAULT_KB).nlu.intents)
    unknown = [(s.id, i) for s in bench for i in s.expect.intents if i is not None and i not in known]
    assert unknown == []
    assert sum(i is not None for s in bench for i in s.expect.intents) >= 100


def test_defaults_language_and_source(tmp_path):
    path = tmp_path / "s.jsonl"
    zh = {
        "id": "zh-1",
        "turns": ["hi", "我要退货"],
        "expect": {"outcome": "human", "reason": ["sensitive_topic"]},
    }
    path.write_text(
        "\n" + json.dumps(GOOD) + "\n" + json.dumps(zh, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    first, second = load_scenarios([path])
    assert (first.language, first.source, first.expect.intents) == ("en", f"{path}:2", (None, None, None))
    assert (second.channel, second.customer_id, second.tier) == ("web", "scenario-zh-1", "standard")
    assert (second.language, second.source, second.expect.reasons) == (
        "zh",
        f"{path}:3",
        ("sensitive_topic",),
    )


def _with(**changes):
    record = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if key.startswith("expect_"):
            record["expect"][key.removeprefix("expect_")] = value
        elif value is None:
            record.pop(key)
        else:
            record[key] = value
    return json.dumps(record)


HUMAN = {"expect_outcome": "human"}

BAD_LINES = [
    ("bad-json", '{"id": "x", "turns": [', "bad JSON"),
    ("not-object", "[1, 2]", "must be a JSON object"),
    ("no-id", _with(id=None), "missing 'id'"),
    ("no-turns", _with(turns=None), "missing 'turns'"),
    ("no-expect", _with(expect=None), "missing 'expect'"),
    ("duplicate", _with(), "duplicate id 'en-ok-1'"),
    ("channel", _with(id="c", channel="sms"), "unknown channel 'sms'"),
    ("outcome", _with(id="o", expect_outcome="robot"), "unknown outcome 'robot'"),
    ("reason", _with(id="r", **HUMAN, expect_reason=["angry"]), "unknown reason code 'angry'"),
    ("by-turn-0", _with(id="b0", **HUMAN, expect_by_turn=0), "'by_turn' must be a turn number from 1 to 3"),
    ("by-turn-4", _with(id="b4", **HUMAN, expect_by_turn=4), "'by_turn' must be a turn number from 1 to 3"),
    ("by-turn-bool", _with(id="bb", **HUMAN, expect_by_turn=True), "'by_turn' must be a turn number"),
    ("not-before-0", _with(id="n0", **HUMAN, expect_not_before=0), "'not_before' must be a turn number"),
    (
        "order",
        _with(id="nb", **HUMAN, expect_not_before=3, expect_by_turn=2),
        "'not_before' (3) is after 'by_turn' (2)",
    ),
    ("intents", _with(id="i", expect_intents=["greet", None]), "one entry per turn (3), got 2"),
    ("empty-turn", _with(id="e", turns=["hi", "  ", "bye"]), "turn 2 is empty"),
    ("no-turn", _with(id="n", turns=[]), "'turns' must be a non-empty list"),
    ("bot-reason", _with(id="br", expect_reason="negative_sentiment"), "reason is given for outcome 'bot'"),
    ("bot-by-turn", _with(id="bt", expect_by_turn=2), "only apply to outcome 'human'"),
    ("typo-key", _with(id="t", **HUMAN, **{"expect_by-turn": 2}), "unknown key expect.'by-turn'"),
]


@pytest.mark.parametrize(
    ("line", "reason"), [(line, reason) for _, line, reason in BAD_LINES], ids=[c[0] for c in BAD_LINES]
)
def test_bad_line_names_file_line_and_reason(tmp_path, line, reason):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_scenarios([path])
    assert str(caught.value).startswith(f"{path}:3: ")
    assert reason in str(caught.value)


def test_duplicate_id_across_files_names_both_places(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(json.dumps(GOOD) + "\n", encoding="utf-8")
    second.write_text(json.dumps(GOOD) + "\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"b\.jsonl:1: duplicate id .*first at .*a\.jsonl:1"):
        load_scenarios([first, second])


def _scenario(
    scenario_id: str,
    turns: int,
    outcome: str = "human",
    reasons: tuple[str, ...] = (),
    by_turn: int | None = None,
    not_before: int | None = None,
    intents: tuple[str | None, ...] | None = None,
    language: str = "en",
) -> Scenario:
    texts = tuple(f"{'消息' if language == 'zh' else 'message'} {n}" for n in range(1, turns + 1))
    expect = Expectation(outcome, reasons, by_turn, not_before, intents or (None,) * turns)
    return Scenario(scenario_id, "web", f"c-{scenario_id}", "standard", texts, expect, language, "test:0")


# Nine conversations, each getting one thing right or wrong; the figures below are counted by hand.
SCENARIOS = [
    _scenario("A", 3, "bot", intents=("greet", "faq/delivery_time", "thanks")),
    _scenario("B", 3, "bot"),
    _scenario("C", 2, reasons=("explicit_request",), by_turn=2, not_before=2),
    _scenario("D", 1, reasons=("explicit_request",), by_turn=1, not_before=1),
    _scenario("E", 4, reasons=("negative_sentiment",), by_turn=4, not_before=3),
    _scenario("F", 4, reasons=("repeated_question", "negative_sentiment"), by_turn=3, not_before=2),
    _scenario("G", 2, reasons=("fallback_streak",), by_turn=2, not_before=2),
    _scenario(
        "H", 1, reasons=("sensitive_topic",), by_turn=1, not_before=1, intents=("complaint",), language="zh"
    ),
    _scenario("I", 2, "bot", intents=("out_of_scope", "thanks"), language="zh"),
]
OBSERVED = {
    "A": Observed("A", None, None, ["greet", "faq/shipping_cost", "thanks"]),  # one intent wrong
    "B": Observed("B", 2, "negative_sentiment", []),  # false positive
    "C": Observed("C", 2, "explicit_request", []),  # caught on its turn
    "D": Observed("D", 1, "negative_sentiment", []),  # on time, wrong reason
    "E": Observed("E", 2, "negative_sentiment", []),  # premature
    "F": Observed("F", 4, "repeated_question", []),  # late
    "G": Observed("G", None, None, []),  # missed
    "H": Observed("H", 1, "sensitive_topic", ["complaint"]),
    "I": Observed(
        "I", None, None, ["nlu_fallback", None]
    ),  # fallback counts as out_of_scope; turn 2 unparsed
}


def test_score_hand_computed_figures():
    result = score(SCENARIOS, OBSERVED)
    assert result["scenarios"] == 9
    assert result["automation_rate"] == pytest.approx(3 / 9)  # A, G, I never handed off
    assert result["escalation_precision"] == pytest.approx(5 / 6)  # B is the one false positive
    assert result["escalation_recall"] == pytest.approx(5 / 6)  # G is missed
    assert result["reason_accuracy"] == pytest.approx(4 / 5)  # C, E, F, H right; D wrong
    assert (result["premature_escalations"], result["late_escalations"]) == (1, 1)
    assert result["intent_accuracy"] == pytest.approx(4 / 5)  # A 2/3, H 1/1, I 1/1
    assert (result["explicit_requests"], result["explicit_caught_on_turn"]) == (2, 1)
    assert (result["false_positives"], result["missed_escalations"], result["wrong_reasons"]) == (1, 1, 1)


def test_score_by_language():
    by_language = score(SCENARIOS, OBSERVED)["by_language"]
    assert set(by_language) == {"zh", "en"}
    zh, en = by_language["zh"], by_language["en"]
    assert (zh["scenarios"], zh["automation_rate"], zh["escalation_precision"], zh["intent_accuracy"]) == (
        2,
        0.5,
        1.0,
        1.0,
    )
    assert en["scenarios"] == 7
    assert en["automation_rate"] == pytest.approx(2 / 7)
    assert en["escalation_precision"] == pytest.approx(4 / 5)
    assert en["escalation_recall"] == pytest.approx(4 / 5)
    assert en["reason_accuracy"] == pytest.approx(3 / 4)
    assert en["intent_accuracy"] == pytest.approx(2 / 3)


def test_score_failures_say_what_went_wrong():
    failures = score(SCENARIOS, OBSERVED)["failures"]
    problems = {f["id"]: f["problem"] for f in failures}
    assert len(failures) == 6 and set(problems) == {"A", "B", "D", "E", "F", "G"}
    assert (
        problems["A"].startswith("wrong intent at turn 2")
        and "'faq/shipping_cost', expected 'faq/delivery_time'" in problems["A"]
    )
    assert problems["B"].startswith("false positive: handed off at turn 2")
    assert problems["D"] == "wrong reason: handed off for 'negative_sentiment', expected explicit_request"
    assert problems["E"] == "premature: handed off at turn 2, not before turn 3"
    assert problems["F"] == "late: handed off at turn 4, expected by turn 3"
    assert problems["G"].startswith("missed: never handed off, expected a handoff by turn 2")


def test_score_empty_denominators_and_any_reason():
    only_bot = [_scenario("x", 2, "bot")]
    result = score(only_bot, {"x": Observed("x", None, None, [None, None])})
    assert result["automation_rate"] == 1.0
    assert (result["escalation_precision"], result["escalation_recall"], result["intent_accuracy"]) == (
        1.0,
        1.0,
        1.0,
    )
    assert result["failures"] == []
    # outcome human with no reason given: any reason is fine and reason_accuracy does not judge it.
    anyone = [
        _scenario("y", 2, reasons=(), by_turn=2),
        _scenario("z", 1, reasons=("fallback_streak",), by_turn=1),
    ]
    observed = {"y": Observed("y", 2, "too_many_turns", []), "z": Observed("z", 1, "negative_sentiment", [])}
    result = score(anyone, observed)
    assert result["reason_accuracy"] == 0.0 and result["wrong_reasons"] == 1


def test_score_refuses_observations_that_do_not_fit():
    with pytest.raises(ValueError, match="no observation for scenario"):
        score(SCENARIOS, {k: v for k, v in OBSERVED.items() if k != "G"})
    with pytest.raises(ValueError, match=r"handoff turn 3 is outside 1\.\.2"):
        score([SCENARIOS[2]], {"C": Observed("C", 3, "explicit_request", [])})
    with pytest.raises(ValueError, match="3 observed intents for 2 turns"):
        score([SCENARIOS[2]], {"C": Observed("C", 2, "explicit_request", ["greet", "greet", "greet"])})
    with pytest.raises(ValueError, match="no scenarios"):
        score([], {})


def test_explicit_request_counts_as_caught_only_on_its_turn():
    asked = [
        _scenario(n, 3, reasons=("explicit_request",), by_turn=2, not_before=2)
        for n in ("on", "after", "before")
    ]
    observed = {
        "on": Observed("on", 2, "explicit_request", []),
        "after": Observed("after", 3, "explicit_request", []),
        "before": Observed("before", 1, "explicit_request", []),
    }
    result = score(asked, observed)
    assert (result["explicit_requests"], result["explicit_caught_on_turn"]) == (3, 1)
    assert (result["late_escalations"], result["premature_escalations"], result["reason_accuracy"]) == (
        1,
        1,
        1.0,
    )
