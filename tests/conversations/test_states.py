"""The state table of DESIGN.md, as data."""

from __future__ import annotations

import itertools

import pytest

from conversations.states import (
    OPEN_STATES,
    TRANSITIONS,
    InvalidTransition,
    State,
    check_transition,
    is_allowed,
)

DESIGN_TABLE = {
    ("bot", "queued"),
    ("queued", "assigned"),
    ("assigned", "resolved"),
    ("bot", "resolved"),
    ("assigned", "bot"),
}
# Not drawn in DESIGN.md (which this project may not edit): agents transfer a chat to another
# skill's queue and close a waiting one. Both are named in conversations/states.py.
AGENT_ADDITIONS = {("assigned", "queued"), ("queued", "resolved")}
DESIGN_TABLE |= AGENT_ADDITIONS


def test_the_table_is_exactly_the_design_plus_the_agent_additions():
    assert {(a.value, b.value) for a, b in TRANSITIONS} == DESIGN_TABLE
    assert [s.value for s in State] == ["bot", "queued", "assigned", "resolved"]


@pytest.mark.parametrize(("source", "target"), list(itertools.product(State, State)))
def test_every_pair_is_allowed_or_refused_as_the_design_says(source, target):
    expected = (source.value, target.value) in DESIGN_TABLE
    assert is_allowed(source, target) is expected
    if expected:
        check_transition(source.value, target.value)
    else:
        with pytest.raises(InvalidTransition) as raised:
            check_transition(source, target)
        assert raised.value.from_state is source and raised.value.to_state is target


def test_only_resolved_is_closed():
    assert State.RESOLVED not in OPEN_STATES
    assert {State.BOT, State.QUEUED, State.ASSIGNED} == OPEN_STATES


def test_invalid_transition_says_what_went_wrong():
    forbidden = InvalidTransition(State.QUEUED, State.QUEUED, conversation_id="c1")
    assert str(forbidden) == "conversation c1: queued -> queued is not allowed"
    stale = InvalidTransition(State.ASSIGNED, State.QUEUED, expected_from=State.BOT)
    assert str(stale) == "expected bot, but it is assigned"
    assert isinstance(stale, ValueError)


def test_unknown_state_names_are_refused():
    with pytest.raises(ValueError, match="'human'"):
        is_allowed("bot", "human")
