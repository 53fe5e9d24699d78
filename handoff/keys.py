"""Redis key names of the handoff queue and the agent directory, all under one prefix (default ``baton:``).

``P`` is the prefix (the same as the conversation store's, `conversations.keys.DEFAULT_PREFIX`);
a handoff id is ``{conversation_id}:{handoff_number}``; an agent id is the agent's login name.

=============================================  ==========  ===============================================
key                                            type        holds
=============================================  ==========  ===============================================
``P agents``                                   set         every agent id
``P agents:online``                            set         the ids of the agents online now
``P agents:last_assigned``                     sorted set  agent ids scored by their latest assignment
                                                           (epoch seconds): the routing tie-break
``P agent:{id}``                               hash        the `Agent` fields; skills and languages as
                                                           JSON arrays
``P agent:{id}:password``                      string      ``scrypt$n$r$p$salt_hex$hash_hex``, never the
                                                           password itself
``P agent:{id}:chats``                         set         the handoff ids assigned to the agent now
``P handoff:{id}``                             hash        the `Handoff` fields, all as text (times as
                                                           epoch seconds, flags as 0/1, reasons as JSON)
``P handoff:events``                           pub/sub     every handoff and agent event as JSON
``P handoffs:stream``                          stream      ``handoff_id`` of each new handoff, read by
                                                           the assigners' consumer group ``assigners``;
                                                           an entry is deleted once acknowledged
``P handoffs:audit``                           stream      the same events as flat fields (``type``,
                                                           ``handoff_id``, ``conversation_id``,
                                                           ``agent_id``, ``at``...), agent events aside;
                                                           capped at about ``audit_maxlen`` entries
``P handoffs:waiting``                         sorted set  waiting handoff ids (all skills) by priority
``P handoffs:waiting:{skill}``                 sorted set  waiting handoff ids of one skill by priority
``P handoffs:tickets``                         sorted set  waiting handoffs admitted while nobody who
                                                           could take them was online, by created_at
``P handoffs:unanswered``                      sorted set  open handoffs with no first response and no
                                                           breach yet, by created_at (breach check)
``P handoffs:conv:{conversation_id}``          sorted set  a conversation's handoff ids by handoff number
=============================================  ==========  ===============================================

Records are ``handoff:``/``agent:`` and collections ``handoffs:``/``agents:``, so an id can never
name a collection (agent ids may not contain ``:``; a handoff id always does, the events channel's
name does not).

The Lua scripts in `handoff.scripts` and `handoff.agents` build the same names from the prefix:
change one, change both (the tests go through both).
"""

from __future__ import annotations

from dataclasses import dataclass

from conversations.keys import DEFAULT_PREFIX

__all__ = ["DEFAULT_PREFIX", "GROUP", "HandoffKeys"]

GROUP = "assigners"  # the consumer group of the handoff stream


@dataclass(frozen=True)
class HandoffKeys:
    """Key names under ``prefix``."""

    prefix: str = DEFAULT_PREFIX

    @property
    def agents(self) -> str:
        """The set of every agent id."""
        return f"{self.prefix}agents"

    @property
    def online(self) -> str:
        """The set of online agent ids."""
        return f"{self.prefix}agents:online"

    @property
    def last_assigned(self) -> str:
        """Agent ids scored by the time of their latest assignment."""
        return f"{self.prefix}agents:last_assigned"

    def agent(self, agent_id: str) -> str:
        """The agent hash."""
        return f"{self.prefix}agent:{agent_id}"

    def password(self, agent_id: str) -> str:
        """The agent's scrypt password hash."""
        return f"{self.agent(agent_id)}:password"

    def chats(self, agent_id: str) -> str:
        """The set of handoff ids assigned to the agent now."""
        return f"{self.agent(agent_id)}:chats"

    def handoff(self, handoff_id: str) -> str:
        """The handoff hash."""
        return f"{self.prefix}handoff:{handoff_id}"

    @property
    def stream(self) -> str:
        """The stream of new handoffs, read by the assigners' consumer group."""
        return f"{self.prefix}handoffs:stream"

    @property
    def audit(self) -> str:
        """The stream of every handoff event."""
        return f"{self.prefix}handoffs:audit"

    @property
    def events(self) -> str:
        """The pub/sub channel of every handoff and agent event."""
        return f"{self.prefix}handoff:events"

    def waiting(self, skill: str | None = None) -> str:
        """Waiting handoffs by priority: of one skill, or of all when ``skill`` is None."""
        base = f"{self.prefix}handoffs:waiting"
        return base if skill is None else f"{base}:{skill}"

    @property
    def tickets(self) -> str:
        """Waiting handoffs admitted while nobody who could take them was online."""
        return f"{self.prefix}handoffs:tickets"

    @property
    def unanswered(self) -> str:
        """Open handoffs with neither a first response nor a breach yet, by creation time."""
        return f"{self.prefix}handoffs:unanswered"

    def by_conversation(self, conversation_id: str) -> str:
        """A conversation's handoff ids by handoff number."""
        return f"{self.prefix}handoffs:conv:{conversation_id}"
