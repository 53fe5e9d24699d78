"""The conversation state machine: ``bot -> queued -> assigned -> resolved``.

Plus ``bot -> resolved`` (the bot solved it) and ``assigned -> bot`` (the agent hands back).
Two more than the basic design, because agents need them: ``assigned -> queued`` (an agent
transfers the chat to another skill's queue) and ``queued -> resolved`` (an agent closes a
waiting chat or a left message without taking it first). Nothing else is allowed, a state to itself included: a second ``bot -> queued`` is refused,
which is what keeps one escalation from becoming two queue entries.

The table here is the only copy: the store hands it to its Lua scripts, which enforce it
inside Redis at write time.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """Who holds the conversation."""

    BOT = "bot"  # the bot answers
    QUEUED = "queued"  # handed off, waiting for an agent; the bot is silent
    ASSIGNED = "assigned"  # an agent has it; the bot is silent
    RESOLVED = "resolved"  # closed; a new message opens a new conversation


TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    {
        (State.BOT, State.QUEUED),
        (State.QUEUED, State.ASSIGNED),
        (State.ASSIGNED, State.RESOLVED),
        (State.BOT, State.RESOLVED),
        (State.ASSIGNED, State.BOT),
        (State.ASSIGNED, State.QUEUED),
        (State.QUEUED, State.RESOLVED),
    }
)

OPEN_STATES: frozenset[State] = frozenset({State.BOT, State.QUEUED, State.ASSIGNED})


class InvalidTransition(ValueError):
    """A state change the table forbids, or one whose ``expected_from`` no longer holds.

    Attributes:
        conversation_id: the conversation, when known.
        from_state: the state the conversation was actually in.
        to_state: the state asked for.
        expected_from: the state the caller believed it was in, if it said so.
    """

    def __init__(
        self,
        from_state: State,
        to_state: State,
        *,
        conversation_id: str | None = None,
        expected_from: State | None = None,
    ) -> None:
        self.conversation_id = conversation_id
        self.from_state = from_state
        self.to_state = to_state
        self.expected_from = expected_from
        where = f"conversation {conversation_id}: " if conversation_id else ""
        if expected_from is not None and expected_from != from_state:
            why = f"expected {expected_from.value}, but it is {from_state.value}"
        else:
            why = f"{from_state.value} -> {to_state.value} is not allowed"
        super().__init__(f"{where}{why}")


def is_allowed(from_state: State | str, to_state: State | str) -> bool:
    """True if the table allows ``from_state -> to_state``."""
    return (State(from_state), State(to_state)) in TRANSITIONS


def check_transition(from_state: State | str, to_state: State | str) -> None:
    """Raise `InvalidTransition` unless the table allows ``from_state -> to_state``."""
    if not is_allowed(from_state, to_state):
        raise InvalidTransition(State(from_state), State(to_state))
