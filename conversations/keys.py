"""Redis key names of the conversation store, all under one prefix (default ``baton:``).

``P`` is the prefix; ids are uuid4 hex, channels and link kinds are fixed words.

=========================================  ==========  ==================================================
key                                        type        holds
=========================================  ==========  ==================================================
``P identity:{channel}:{external_id}``     string      the customer id of a channel identity
``P link:{kind}:{value}``                  string      the customer id holding a verified phone/member id
``P customer:{id}``                        hash        id, tier, display_name, created_at;
                                                       ``merged_into`` once merged into another customer
``P customer:{id}:identities``             set         ``{channel}:{external_id}`` of each identity
``P customer:{id}:links``                  set         ``{kind}:{value}`` of each verified link
``P customer:{id}:conversations``          sorted set  conversation ids, scored by creation time
``P customer:{id}:open``                   string      the customer's open (not resolved) conversation
``P conv:{id}``                            hash        the `Conversation` fields, all as text
``P conv:{id}:turns``                      list        turn JSON; the turn with seq n is at index n-1
``P conv:{id}:msgids``                     hash        client_message_id -> seq, for dedupe
``P conv:{id}:effects``                    hash        the idempotency key of a notice Baton wrote
                                                       once (a queue position, say) -> seq
``P conv:{id}:context``                    string      the bot's dialogue context (JSON) between turns
``P conv:{id}:events``                     stream      created / transition / turn events (capped)
``P outbox:{channel}``                      stream      ``conversation_id`` and ``seq`` of each turn Baton
                                                       wrote for a customer who last wrote on a pushed
                                                       channel (WeChat), consumer group ``senders``
``P inbox``                                stream      ``conversation_id`` and ``seq`` of each customer
                                                       turn not yet handled, consumer group
                                                       ``handlers`` (`conversations.streams`)
=========================================  ==========  ==================================================

Every event added to ``P conv:{id}:events`` is also published, as JSON with its stream id,
on the pub/sub channel of the same name; ``PSUBSCRIBE P conv:*:events`` follows them all.

The Lua scripts (`conversations.scripts`) build the same names from the prefix: change
one, change both (tests check that they agree).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "baton:"


@dataclass(frozen=True)
class Keys:
    """Key names under ``prefix``."""

    prefix: str = DEFAULT_PREFIX

    def identity(self, channel: str, external_id: str) -> str:
        """The customer id of one channel identity."""
        return f"{self.prefix}identity:{channel}:{external_id}"

    def link(self, kind: str, value: str) -> str:
        """The customer id holding a verified phone number or member id."""
        return f"{self.prefix}link:{kind}:{value}"

    def customer(self, customer_id: str) -> str:
        """The customer hash."""
        return f"{self.prefix}customer:{customer_id}"

    def customer_identities(self, customer_id: str) -> str:
        """The set of ``channel:external_id`` of a customer."""
        return f"{self.customer(customer_id)}:identities"

    def customer_links(self, customer_id: str) -> str:
        """The set of ``kind:value`` links of a customer."""
        return f"{self.customer(customer_id)}:links"

    def customer_conversations(self, customer_id: str) -> str:
        """The sorted set of a customer's conversation ids."""
        return f"{self.customer(customer_id)}:conversations"

    def customer_open(self, customer_id: str) -> str:
        """The id of the customer's open conversation."""
        return f"{self.customer(customer_id)}:open"

    def conversation(self, conversation_id: str) -> str:
        """The conversation hash."""
        return f"{self.prefix}conv:{conversation_id}"

    def turns(self, conversation_id: str) -> str:
        """The list of turn JSON documents."""
        return f"{self.conversation(conversation_id)}:turns"

    def message_ids(self, conversation_id: str) -> str:
        """client_message_id -> seq."""
        return f"{self.conversation(conversation_id)}:msgids"

    def effects(self, conversation_id: str) -> str:
        """Idempotency key of a notice written once -> its seq."""
        return f"{self.conversation(conversation_id)}:effects"

    def outbox(self, channel: str) -> str:
        """The stream of turns to push out through ``channel``'s own API."""
        return f"{self.prefix}outbox:{channel}"

    @property
    def inbox(self) -> str:
        """The stream of customer turns waiting to be handled."""
        return f"{self.prefix}inbox"

    def context(self, conversation_id: str) -> str:
        """The bot's dialogue context (JSON) between turns."""
        return f"{self.conversation(conversation_id)}:context"

    def events(self, conversation_id: str) -> str:
        """The event stream, and the pub/sub channel of the same name."""
        return f"{self.conversation(conversation_id)}:events"

    @property
    def events_pattern(self) -> str:
        """A PSUBSCRIBE pattern for the events of every conversation."""
        # A prefix is plain text, but a pattern treats * ? [ ] \\ as glob syntax: escape them.
        escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix)
        return f"{escaped}conv:*:events"
