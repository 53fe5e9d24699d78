"""The conversation store on Redis: customers, identities, conversations, turns and states.

This is the one place a conversation's state changes. Every write is a single Lua script
(`conversations.scripts`), so two API replicas racing on the same customer or conversation
cannot both create, both escalate or both store one message. The key layout is described
in `conversations.keys`; every key sits under a prefix (default ``baton:``) so that apps
and tests can share one server.

Guarantees:
    - one customer per channel identity, created on first sight;
    - at most one open conversation per customer (see `ConversationStore.link` for the one
      exception a merge can leave);
    - a client_message_id is stored once per conversation; seq numbers are 1, 2, 3... with no gaps;
    - the bot's turn is written only while the conversation is in state ``bot``, checked at
      write time;
    - a state changes only along `conversations.states.TRANSITIONS`, check-and-set inside Redis;
      each change is added to the conversation's event stream and published;
    - a customer turn stored for a handler is, in the same step, an inbox entry pending with it,
      and a turn written for a customer who last wrote on WeChat an entry of its outbox
      (`conversations.streams`): stored work is never lost, only done late.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple, Self

from redis.asyncio import Redis

from conversations import scripts
from conversations.keys import DEFAULT_PREFIX, Keys
from conversations.model import (
    DEFAULT_TIER,
    LINK_KINDS,
    ChannelIdentity,
    Conversation,
    Customer,
    Turn,
    format_time,
    utcnow,
)
from conversations.redis_client import RedisClientHolder, connect
from conversations.states import TRANSITIONS, InvalidTransition, State

MAX_MERGE_HOPS = 32  # the Lua scripts follow merged_into as far


class ConversationNotFound(LookupError):
    """No conversation has this id."""


class CustomerNotFound(LookupError):
    """No customer has this id."""


class BotSilenced(RuntimeError):
    """The bot may not send: the conversation is queued, assigned or resolved.

    Attributes:
        conversation_id: the conversation.
        state: the state it was in when the bot's turn was refused.
    """

    def __init__(self, conversation_id: str, state: State) -> None:
        self.conversation_id = conversation_id
        self.state = state
        super().__init__(f"conversation {conversation_id} is {state.value}: the bot stays silent")


class StoredTurn(NamedTuple):
    """What `ConversationStore.append_customer_turn` did.

    Attributes:
        turn: the stored turn (the original one for a repeat).
        stored: False for a repeat of a client message id: nothing was written.
        entry_id: the message's inbox entry, pending with the handler named (None for a repeat
            or a message recorded without a handler).
        pending: the message has not been handled yet (a repeat of a message whose handler
            died: handle it now).
    """

    turn: Turn
    stored: bool
    entry_id: str | None
    pending: bool


def _new_id() -> str:
    return uuid.uuid4().hex


def draft_turn(
    conversation_id: str,
    sender: str,
    text: str,
    channel: str,
    language: str | None,
    *,
    nlu: dict[str, Any] | None = None,
    client_message_id: str | None = None,
    timings: dict[str, float] | None = None,
    buttons: Sequence[dict[str, str]] = (),
    reply_to: int | None = None,
    author: str | None = None,
) -> Turn:
    """A turn not stored yet: its seq (0 here) is given by the script that stores it."""
    return Turn(
        id=_new_id(),
        conversation_id=conversation_id,
        seq=0,
        sender=sender,
        channel=channel,
        language=language,
        text=text,
        nlu=nlu,
        client_message_id=client_message_id,
        created_at=utcnow(),
        timings=dict(timings or {}),
        buttons=[dict(b) for b in buttons],
        reply_to=reply_to,
        author=author,
    )


def turn_body(draft: Turn) -> str:
    """A draft's JSON as the Lua ``append_turn`` takes it: without seq and the opening brace."""
    fields = draft.to_dict()
    del fields["seq"]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))[1:]


def stored_turn(record: str) -> Turn:
    """The turn of a record a script stored (its JSON, seq first)."""
    return Turn.from_dict(json.loads(record))


def _as_dict(flat: Sequence[str]) -> dict[str, str]:
    """An HGETALL reply given as a flat [field, value, ...] array."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


class ConversationStore(RedisClientHolder):
    """Customers, conversations and turns in Redis, through ``redis.asyncio``.

    Create it with `from_url` (it then owns and closes its client) or around a client made
    with ``decode_responses=True``. Close it with `aclose` or ``async with``.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        events_maxlen: int = 1000,
        owns_client: bool = False,
    ) -> None:
        """Wrap ``client``.

        Args:
            client: a ``redis.asyncio.Redis`` made with ``decode_responses=True``.
            prefix: put before every key, e.g. ``baton:`` or ``test-42:``.
            events_maxlen: about how many events each conversation's stream keeps
                (turns stay whole in their own list; the stream is for followers).
            owns_client: close ``client`` in `aclose`.
        """
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the Redis client must be created with decode_responses=True")
        self.client = client
        self.keys = Keys(prefix)
        self.events_maxlen = events_maxlen
        self._owns_client = owns_client
        # The table travels to Lua as 'from>to' words: states.py stays the only copy.
        self.transitions_arg = " ".join(f"{a.value}>{b.value}" for a, b in sorted(TRANSITIONS))
        self._resolve_customer = client.register_script(scripts.PREAMBLE + scripts.RESOLVE_CUSTOMER)
        self._link = client.register_script(scripts.PREAMBLE + scripts.LINK)
        self._current_conversation = client.register_script(scripts.PREAMBLE + scripts.CURRENT_CONVERSATION)
        self._append_turn = client.register_script(scripts.PREAMBLE + scripts.APPEND_TURN)
        self._transition = client.register_script(scripts.PREAMBLE + scripts.TRANSITION)
        self._mark_handled = client.register_script(scripts.PREAMBLE + scripts.MARK_HANDLED)
        self._set_if_unchanged = client.register_script(scripts.SET_LIST_ITEM_IF_UNCHANGED)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX, events_maxlen: int = 1000) -> Self:
        """A store with its own client for ``url`` (``redis://host:port/db``)."""
        client = connect(url)
        return cls(client, prefix=prefix, events_maxlen=events_maxlen, owns_client=True)

    # -- customers ---------------------------------------------------------------------------

    async def resolve_customer(
        self, channel: str, external_id: str, tier: str | None = None, display_name: str | None = None
    ) -> Customer:
        """The customer behind a channel identity, created on first sight.

        Concurrent calls for one identity get one customer. A ``tier`` or ``display_name``
        given for a known customer replaces the stored one (a customer can become VIP).
        """
        identity = ChannelIdentity(channel, external_id)
        _created, flat = await self._resolve_customer(
            keys=[self.keys.identity(channel, external_id)],
            args=[
                *self.common_args(),
                _new_id(),
                tier or "",
                display_name or "",
                f"{identity.channel}:{identity.external_id}",
                DEFAULT_TIER,
            ],
        )
        return Customer.from_dict(_as_dict(flat))

    async def link(self, customer_id: str, kind: str, value: str) -> Customer:
        """Attach a verified phone number or member id to a customer, merging customers if needed.

        The caller verifies ``value`` (an SMS code, a login) and normalises it (E.164 for
        phones); the store only joins. If another customer already holds ``value``, the two
        become one: **the customer that already held the value survives**, so the id that
        other systems know the verified person by keeps working. The other one's channel
        identities, links and conversations move to the survivor (each conversation's
        ``customer_id`` is rewritten) and its id becomes an alias: every method here follows
        it to the survivor.

        When both customers had an open conversation, the one a person is involved in
        (queued or assigned) stays current, else the more recently updated one; the other
        is resolved with reason ``merged`` if the bot held it, and left open for its agent if
        not (the one case where a customer has two open conversations).

        Linking again, from either side, changes nothing.

        Returns:
            The customer who holds ``value`` now (the survivor after a merge).

        Raises:
            CustomerNotFound: no customer has ``customer_id``.
            ValueError: ``kind`` is not one of `LINK_KINDS`, or ``value`` is empty.
        """
        if kind not in LINK_KINDS:
            raise ValueError(f"unknown link kind {kind!r}; expected one of {', '.join(LINK_KINDS)}")
        if not value:
            raise ValueError("a link value must not be empty")
        outcome, survivor = await self._link(
            keys=[self.keys.link(kind, value)],
            args=[*self.common_args(), customer_id, f"{kind}:{value}", DEFAULT_TIER, self.transitions_arg],
        )
        if outcome == "missing":
            raise CustomerNotFound(customer_id)
        customer = await self.get_customer(survivor)
        assert customer is not None  # the script just wrote it
        return customer

    async def get_customer(self, customer_id: str) -> Customer | None:
        """The customer, following merges to the survivor; None if unknown."""
        for _ in range(MAX_MERGE_HOPS):
            data = await self.client.hgetall(self.keys.customer(customer_id))
            if not data:
                return None
            if "merged_into" not in data:
                return Customer.from_dict(data)
            customer_id = data["merged_into"]
        raise RuntimeError(f"merge chain too long at customer {customer_id}")

    async def customer_identities(self, customer_id: str) -> list[ChannelIdentity]:
        """Every channel identity of the customer (after merges), sorted."""
        customer = await self._existing_customer(customer_id)
        members = await self.client.smembers(self.keys.customer_identities(customer.id))
        return [ChannelIdentity(*member.split(":", 1)) for member in sorted(members)]

    async def customer_conversations(self, customer_id: str) -> list[Conversation]:
        """The customer's conversations across channels (merged histories included), oldest first."""
        customer = await self._existing_customer(customer_id)
        ids = await self.client.zrange(self.keys.customer_conversations(customer.id), 0, -1)
        async with self.client.pipeline(transaction=False) as pipe:
            for conversation_id in ids:
                pipe.hgetall(self.keys.conversation(conversation_id))
            hashes = await pipe.execute()
        return [Conversation.from_dict(data) for data in hashes if data]

    # -- conversations -----------------------------------------------------------------------

    async def current_conversation(
        self, customer_id: str, channel: str, language: str | None = None
    ) -> Conversation:
        """The customer's open conversation, else a new one in state ``bot`` on ``channel``.

        Concurrent calls for one customer never create two open conversations.

        Raises:
            CustomerNotFound: no customer has ``customer_id``.
        """
        ChannelIdentity(channel, "-")  # validates the channel before anything is written
        moment = utcnow()
        outcome, *rest = await self._current_conversation(
            args=[
                *self.common_args(format_time(moment)),
                customer_id,
                _new_id(),
                channel,
                language or "",
                moment.timestamp(),
            ],
        )
        if outcome == "missing":
            raise CustomerNotFound(customer_id)
        return Conversation.from_dict(_as_dict(rest[0]))

    async def open_conversation(self, customer_id: str) -> Conversation | None:
        """The customer's open conversation, or None (nothing is created, unlike `current_conversation`).

        Raises:
            CustomerNotFound: no customer has ``customer_id``.
        """
        customer = await self._existing_customer(customer_id)
        conversation_id = await self.client.get(self.keys.customer_open(customer.id))
        if conversation_id is None:
            return None
        conversation = await self.get_conversation(conversation_id)
        return conversation if conversation is not None and conversation.is_open else None

    async def latest_conversation(self, customer_id: str) -> Conversation | None:
        """The customer's most recently created conversation, open or not; None if there is none.

        Raises:
            CustomerNotFound: no customer has ``customer_id``.
        """
        customer = await self._existing_customer(customer_id)
        ids = await self.client.zrange(self.keys.customer_conversations(customer.id), -1, -1)
        return await self.get_conversation(ids[0]) if ids else None

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation, or None if unknown."""
        data = await self.client.hgetall(self.keys.conversation(conversation_id))
        return Conversation.from_dict(data) if data else None

    async def transition(
        self,
        conversation_id: str,
        to_state: State | str,
        expected_from: State | str | None = None,
        reason: str | None = None,
    ) -> Conversation:
        """Move the conversation to ``to_state``, check-and-set inside Redis.

        ``bot -> queued`` counts one more handoff and records ``reason`` as ``last_reason``.
        Resolving frees the customer to start a new conversation. The change is added to
        the conversation's event stream and published (`events`, `Keys.events`).

        Args:
            conversation_id: the conversation.
            to_state: the state to move to.
            expected_from: if given, the change happens only if the conversation is in this
                state now (a worker that read ``bot`` and decided to escalate says so).
            reason: why (escalation reason codes such as ``explicit_request``).

        Returns:
            The conversation after the change.

        Raises:
            InvalidTransition: the table forbids it, or ``expected_from`` no longer holds. Of
                two racing ``bot -> queued`` calls, exactly one succeeds and the other gets this.
            ConversationNotFound: no conversation has this id.
        """
        target = State(to_state)
        expected = State(expected_from) if expected_from is not None else None
        outcome, *rest = await self._transition(
            args=[
                *self.common_args(),
                conversation_id,
                target.value,
                expected.value if expected else "",
                reason or "",
                self.transitions_arg,
            ],
        )
        if outcome == "missing":
            raise ConversationNotFound(conversation_id)
        if outcome in ("unexpected", "forbidden"):
            raise InvalidTransition(
                State(rest[0]), target, conversation_id=conversation_id, expected_from=expected
            )
        return Conversation.from_dict(_as_dict(rest[0]))

    # -- turns -------------------------------------------------------------------------------

    async def append_customer_turn(
        self,
        conversation_id: str,
        text: str,
        channel: str,
        language: str | None,
        client_message_id: str | None,
        nlu: dict[str, Any] | None = None,
        timings: dict[str, float] | None = None,
        *,
        handler: str | None = None,
    ) -> StoredTurn:
        """Store a customer's message, once per ``client_message_id``.

        Take ``conversation_id`` from `current_conversation`. A message that reaches a
        conversation resolved in the meantime is still stored there (no message is lost);
        dedupe is per conversation, as the channel's message ids are.

        Args:
            handler: the inbox consumer (`conversations.streams.Inbox`) of the replica that will
                handle the message: in the same step, the message becomes an inbox entry pending
                with it. None records a message that needs no handling (one imported from
                another system), which counts as handled at once.

        Returns:
            The turn, and whether it was stored now; with ``client_message_id`` seen before in
            this conversation (a channel's retry) nothing is written and the original turn
            comes back, ``pending`` saying whether it is still waiting to be handled.

        Raises:
            ConversationNotFound: no conversation has this id.
        """
        mode = "customer" if handler else "record"
        turn, outcome, entry, handled = await self._append(
            mode,
            conversation_id,
            "customer",
            text,
            channel,
            language,
            client_message_id,
            nlu,
            timings,
            consumer=handler or "",
        )
        return StoredTurn(turn, outcome == "stored", entry or None, handled < turn.seq)

    async def append_bot_turn(
        self,
        conversation_id: str,
        text: str,
        *,
        channel: str | None = None,
        language: str | None = None,
        nlu: dict[str, Any] | None = None,
        timings: dict[str, float] | None = None,
        buttons: Sequence[dict[str, str]] = (),
        reply_to: int | None = None,
    ) -> Turn:
        """Store the bot's reply, only if the conversation is in state ``bot`` at write time.

        ``reply_to`` is the seq of the customer turn it answers: when a customer sends again
        before the answer is out, turns interleave, and this says which answer is whose.

        Send the reply only after this returns: a handoff decided on another replica while
        the bot was thinking makes this raise instead. ``channel`` and ``language`` default
        to the conversation's.

        Raises:
            BotSilenced: the conversation is queued, assigned or resolved.
            ConversationNotFound: no conversation has this id.
        """
        channel, language = await self.defaults(conversation_id, channel, language)
        turn, *_ = await self._append(
            "bot", conversation_id, "bot", text, channel, language, None, nlu, timings, buttons, reply_to
        )
        return turn

    async def append_turn(
        self,
        conversation_id: str,
        sender: str,
        text: str,
        *,
        channel: str | None = None,
        language: str | None = None,
        timings: dict[str, float] | None = None,
        buttons: Sequence[dict[str, str]] = (),
        author: str | None = None,
        once: str | None = None,
    ) -> Turn:
        """Store an agent's or a system message (``sender`` ``agent`` or ``system``).

        Customer and bot turns have their own methods, so that dedupe and the bot's
        silence cannot be bypassed. ``channel`` and ``language`` default to the conversation's.
        ``buttons`` are quick replies (e.g. the 1-5 rating after a resolve); ``author`` is the
        agent who wrote an agent turn. ``once`` is an idempotency key: a notice that a retried
        step writes again (a queue position after a crash) is stored once, and the stored turn
        comes back.

        Raises:
            ValueError: ``sender`` is not ``agent`` or ``system``.
            ConversationNotFound: no conversation has this id.
        """
        if sender not in ("agent", "system"):
            raise ValueError(f"append_turn stores agent and system turns, not {sender!r}")
        channel, language = await self.defaults(conversation_id, channel, language)
        turn, *_ = await self._append(
            "other",
            conversation_id,
            sender,
            text,
            channel,
            language,
            once,
            None,
            timings,
            buttons,
            author=author,
        )
        return turn

    async def turns(self, conversation_id: str, after_seq: int = 0, limit: int = 100) -> list[Turn]:
        """Up to ``limit`` turns with seq greater than ``after_seq``, in order."""
        if after_seq < 0 or limit < 1:
            raise ValueError("after_seq must be >= 0 and limit >= 1")
        # The turn with seq n sits at index n - 1, so the ones after after_seq start at index after_seq.
        records = await self.client.lrange(self.keys.turns(conversation_id), after_seq, after_seq + limit - 1)
        return [Turn.from_dict(json.loads(record)) for record in records]

    async def annotate_turn(
        self,
        conversation_id: str,
        seq: int,
        *,
        nlu: dict[str, Any] | None = None,
        timings: dict[str, float] | None = None,
    ) -> Turn:
        """Add what the bot understood (``nlu``) and more ``timings`` to a stored turn.

        A customer's message is stored before the bot reads it (nothing is lost if the bot
        fails), so its understanding is written afterwards, here. Text, sender and seq never change.

        Raises:
            ConversationNotFound: the conversation has no turn ``seq``.
        """
        key = self.keys.turns(conversation_id)
        if seq < 1:
            raise ConversationNotFound(f"{conversation_id} has no turn {seq}")
        for _ in range(8):  # compare-and-set: another writer may touch the same record
            record = await self.client.lindex(key, seq - 1)
            if record is None:
                raise ConversationNotFound(f"{conversation_id} has no turn {seq}")
            data = json.loads(record)
            if nlu is not None:
                data["nlu"] = nlu
            data["timings"] = {**data.get("timings", {}), **(timings or {})}
            updated = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            if await self._set_if_unchanged(keys=[key], args=[seq - 1, record, updated]):
                return Turn.from_dict(data)
        raise RuntimeError(f"turn {seq} of {conversation_id} kept changing")

    async def mark_handled(self, conversation_id: str, expected: int, seq: int) -> bool:
        """Record that customer turn ``seq`` is handled, if the mark still reads ``expected``.

        A handler reads the conversation's ``handled`` mark, handles the next customer turn and
        then calls this (or a script that does the same with the handling's own writes): False
        means another handler got there first, and this one's work must not take effect.
        """
        outcome, _detail = await self._mark_handled(
            args=[*self.common_args(), conversation_id, str(expected), str(seq)]
        )
        return outcome == "ok"

    async def bot_context(self, conversation_id: str) -> dict[str, Any] | None:
        """The dialogue context the bot saved for the conversation, or None."""
        text = await self.client.get(self.keys.context(conversation_id))
        return json.loads(text) if text else None

    async def save_bot_context(self, conversation_id: str, context: dict[str, Any]) -> None:
        """Keep the bot's dialogue context for the conversation's next turn."""
        await self.client.set(self.keys.context(conversation_id), json.dumps(context, ensure_ascii=False))

    # -- events ------------------------------------------------------------------------------

    async def events(
        self, conversation_id: str, after: str | None = None, count: int = 100
    ) -> list[tuple[str, dict[str, str]]]:
        """Up to ``count`` events of the conversation after stream id ``after`` (all if None).

        Each is ``(stream_id, fields)``; fields hold ``type`` (created, transition, turn),
        ``conversation_id``, ``at`` and, by type, ``from``/``to``/``reason``/``handoff_count``
        or ``seq``/``sender``/``turn``. A follower that missed pub/sub messages (the channel
        is `Keys.events` too) catches up here from the last stream id it saw.
        """
        start = f"({after}" if after else "-"
        return await self.client.xrange(self.keys.events(conversation_id), min=start, count=count)

    def common_args(self, now: str | None = None) -> list[str | int]:
        """ARGV[1..3] of every script built on `conversations.scripts.PREAMBLE`: prefix, time, stream cap."""
        return [self.keys.prefix, now or format_time(utcnow()), self.events_maxlen]

    # -- internals ---------------------------------------------------------------------------

    async def _existing_customer(self, customer_id: str) -> Customer:
        customer = await self.get_customer(customer_id)
        if customer is None:
            raise CustomerNotFound(customer_id)
        return customer

    async def defaults(
        self, conversation_id: str, channel: str | None = None, language: str | None = None
    ) -> tuple[str, str | None]:
        """``channel`` and ``language``, each defaulting to the conversation's.

        Raises:
            ConversationNotFound: no conversation has this id.
        """
        if channel is not None and language is not None:
            return channel, language
        stored_channel, stored_language = await self.client.hmget(
            self.keys.conversation(conversation_id), ["channel", "language"]
        )
        if stored_channel is None:
            raise ConversationNotFound(conversation_id)
        return channel or stored_channel, language or stored_language or None

    async def _append(
        self,
        mode: str,
        conversation_id: str,
        sender: str,
        text: str,
        channel: str,
        language: str | None,
        client_message_id: str | None,
        nlu: dict[str, Any] | None,
        timings: dict[str, float] | None,
        buttons: Sequence[dict[str, str]] = (),
        reply_to: int | None = None,
        author: str | None = None,
        consumer: str = "",
    ) -> tuple[Turn, str, str, int]:
        """The turn and the script's outcome, inbox entry id and handled mark."""
        draft = draft_turn(
            conversation_id,
            sender,
            text,
            channel,
            language,
            nlu=nlu,
            client_message_id=client_message_id,
            timings=timings,
            buttons=buttons,
            reply_to=reply_to,
            author=author,
        )
        moment = draft.created_at
        body = turn_body(draft)
        outcome, detail, entry, handled = await self._append_turn(
            args=[
                *self.common_args(format_time(moment)),
                conversation_id,
                mode,
                client_message_id or "",
                body,
                language or "",
                sender,
                consumer,
                channel,
            ],
        )
        if outcome == "missing":
            raise ConversationNotFound(conversation_id)
        if outcome == "refused":
            raise BotSilenced(conversation_id, State(detail))
        return stored_turn(detail), outcome, entry, int(handled)
