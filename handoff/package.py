"""The handoff package: everything an agent needs to take over a conversation without asking again.

The transcript (every turn, whichever channel it came from), the customer's profile (tier,
identities across channels, orders they mentioned looked up through the order connector,
earlier conversations and how they ended), the intent and sentiment of each customer turn, the
reasons for the escalation, a short summary in the conversation's language, the agents'
internal notes, and three suggested replies for the last customer message.

It is built when an agent opens the conversation, not stored, so it is never stale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent_assist.suggestions import ReplySuggester
from agent_assist.summary import summarize
from conversations.model import Conversation, Turn
from conversations.store import ConversationStore
from handoff.records import Records

OrderLookup = Callable[[str], Awaitable[Mapping[str, Any] | None]]
MAX_TURNS = 1000  # a transcript longer than this is cut to its latest turns
MAX_ORDERS = 5


def customer_trace(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """Intent, confidence and sentiment of each customer turn, in order."""
    trace = []
    for turn in turns:
        if turn.sender != "customer":
            continue
        nlu = turn.nlu or {}
        trace.append(
            {
                "seq": turn.seq,
                "intent": nlu.get("intent"),
                "confidence": nlu.get("confidence"),
                "sentiment": nlu.get("sentiment"),
            }
        )
    return trace


def last_customer_turn(turns: Sequence[Turn]) -> Turn | None:
    """The latest customer turn, None if there is none."""
    return next((t for t in reversed(turns) if t.sender == "customer"), None)


def slots_of(turns: Sequence[Turn]) -> dict[str, str]:
    """Entity values the customer gave, the latest of each kind winning (to fill reply templates)."""
    slots: dict[str, str] = {}
    for turn in turns:
        for entity in (turn.nlu or {}).get("entities", ()) if turn.sender == "customer" else ():
            slots[entity["entity"]] = entity["value"]
    return slots


def suggest_for(
    suggester: ReplySuggester, turns: Sequence[Turn], reasons: Sequence[str], language: str
) -> list[dict[str, Any]]:
    """Three suggested replies for the last customer message of ``turns``."""
    last = last_customer_turn(turns)
    if last is None:
        return []
    nlu = last.nlu or {}
    ranking = [(r["name"], float(r["confidence"])) for r in nlu.get("ranking", ())]
    suggestions = suggester.suggest(
        last.text, language, ranking=ranking, reasons=reasons, slots=slots_of(turns)
    )
    return [s.to_dict() for s in suggestions]


@dataclass
class PackageBuilder:
    """Builds handoff packages from the store and its neighbours."""

    store: ConversationStore
    records: Records
    suggester: ReplySuggester
    orders: OrderLookup | None = None
    titles: Mapping[str, str] | None = None

    async def build(self, conversation: Conversation, handoff: Mapping[str, Any] | None) -> dict[str, Any]:
        """The package of ``conversation``; ``handoff`` is its handoff record (None if it has none)."""
        turns = await self._all_turns(conversation.id)
        language = conversation.language or (turns[-1].language if turns else None) or "en"
        reasons = list(
            (handoff or {}).get("reasons") or ([conversation.last_reason] if conversation.last_reason else [])
        )
        customer = await self.store.get_customer(conversation.customer_id)
        identities = await self.store.customer_identities(conversation.customer_id)
        earlier = [
            c
            for c in await self.store.customer_conversations(conversation.customer_id)
            if c.id != conversation.id
        ]
        history = [await self._history_entry(c) for c in reversed(earlier[-10:])]
        return {
            "handoff": dict(handoff) if handoff else None,
            "conversation": conversation.to_dict(),
            "customer": {
                **(customer.to_dict() if customer else {"id": conversation.customer_id}),
                "identities": [i.to_dict() for i in identities],
            },
            "orders": await self._orders(turns),
            "history": history,
            "transcript": [t.to_dict() for t in turns],
            "trace": customer_trace(turns),
            "reasons": reasons,
            "summary": summarize([t.to_dict() for t in turns], reasons, language, self.titles),
            "suggestions": await self._suggest(turns, reasons, language),
            "notes": await self.records.notes(conversation.id),
        }

    async def suggestions(self, conversation_id: str, reasons: Sequence[str]) -> list[dict[str, Any]]:
        """Suggested replies for the conversation's latest customer message."""
        conversation = await self.store.get_conversation(conversation_id)
        if conversation is None:
            return []
        turns = await self._all_turns(conversation_id)
        return await self._suggest(turns, reasons, conversation.language or "en")

    async def _suggest(
        self, turns: Sequence[Turn], reasons: Sequence[str], language: str
    ) -> list[dict[str, Any]]:
        # Off the event loop: with an encoder, ranking articles encodes the message (~15 ms on 2
        # cores), which would hold up every other chat and agent meanwhile.
        return await asyncio.to_thread(suggest_for, self.suggester, turns, reasons, language)

    async def _all_turns(self, conversation_id: str) -> list[Turn]:
        turns: list[Turn] = []
        while len(turns) < MAX_TURNS:
            page = await self.store.turns(conversation_id, after_seq=turns[-1].seq if turns else 0, limit=200)
            if not page:
                break
            turns.extend(page)
        return turns

    async def _history_entry(self, conversation: Conversation) -> dict[str, Any]:
        """How an earlier conversation went: channel, when, whether a person was involved, its rating."""
        if conversation.is_open:
            outcome = "open"
        elif conversation.handoff_count:
            outcome = "resolved_by_agent"
        else:
            outcome = "resolved_by_bot"
        fields = conversation.to_dict()
        return {
            "id": conversation.id,
            "channel": conversation.channel,
            "language": conversation.language,
            "created_at": fields["created_at"],
            "updated_at": fields["updated_at"],
            "state": conversation.state.value,
            "handoff_count": conversation.handoff_count,
            "last_reason": conversation.last_reason,
            "outcome": outcome,
            "rating": await self.records.rating(conversation.id),
        }

    async def _orders(self, turns: Sequence[Turn]) -> list[dict[str, Any]]:
        """The orders the customer mentioned in this conversation, looked up (newest mention first)."""
        if self.orders is None:
            return []
        numbers: list[str] = []
        for turn in reversed(turns):
            for entity in (turn.nlu or {}).get("entities", ()) if turn.sender == "customer" else ():
                if entity["entity"] == "order_number" and entity["value"] not in numbers:
                    numbers.append(entity["value"])
        found = []
        for number in numbers[:MAX_ORDERS]:
            try:
                order = await self.orders(number)
            except Exception as exc:  # the order system being down must not hide the rest of the package
                found.append({"number": number, "error": str(exc) or type(exc).__name__})
                continue
            found.append(dict(order) if order else {"number": number, "error": "not found"})
        return found
