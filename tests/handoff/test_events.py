"""The contract between the publishers of events (Lua scripts, the agent directory, the API) and their
readers: every event published in a whole handoff's life parses into its type, with its fields."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from redis.asyncio import Redis

from conversations.states import State
from conversations.store import ConversationStore, draft_turn
from handoff import events
from handoff.agents import Agent
from handoff.handoffs import HandoffRequest
from handoff.parts import build_handoff
from knowledge_index.handoff_file import HandoffConfig

PREFIX = "t-events:"


async def _collect(pubsub: Any, quiet: float = 0.5) -> list[dict[str, Any]]:
    """Every message that arrives until ``quiet`` seconds pass with none (bounded to 10 s)."""
    received: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    end, last = loop.time() + 10, loop.time()
    while loop.time() < end and loop.time() - last < quiet:
        message = await pubsub.get_message(timeout=0.05)
        if message is not None and message["type"] in ("message", "pmessage"):
            received.append(json.loads(message["data"]))
            last = loop.time()
    return received


def test_every_published_event_parses_into_its_type(redis_url):
    async def main() -> None:
        client = Redis.from_url(redis_url, decode_responses=True)
        try:
            store = ConversationStore(client, prefix=PREFIX)
            desk = build_handoff(client, store, HandoffConfig(first_response_seconds=30))
            queue = desk.queue
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.psubscribe(store.keys.events_pattern)
                await pubsub.subscribe(queue.keys.events)
                await desk.agents.create(Agent("a", "A"), "a-password")
                await desk.agents.create(Agent("b", "B"), "b-password")
                await desk.agents.set_online("a", True)
                await desk.agents.set_online("b", True)
                customer = await store.resolve_customer("web", "visitor")
                conversation = await store.current_conversation(customer.id, "web", "en")
                await store.append_customer_turn(conversation.id, "help", "web", "en", "m1", handler="r")
                request = HandoffRequest(
                    conversation.id, customer.id, "web", "en", "general", ("x",), 2, False
                )
                handoff = await queue.escalate(request, "explicit_request", first=True)
                await queue.admit(handoff.id)
                await queue.claim(handoff.id, "a")
                await queue.transfer_to_agent(handoff.id, "b")
                held = await queue.get(handoff.id)
                hello = draft_turn(conversation.id, "agent", "hello", "web", "en", author="b")
                await queue.send(held, actor="b", turn=hello)
                await queue.check_breaches(now=held.created_at + 3600)  # answered: no breach
                await queue.finish(
                    held, actor="b", expected=State.ASSIGNED, target=State.RESOLVED, outcome="resolved"
                )
                late = await store.current_conversation(customer.id, "web", "en")
                request = HandoffRequest(late.id, customer.id, "web", "en", "general", ("x",), 1, False)
                unanswered = await queue.escalate(request, "explicit_request", first=True)
                await queue.check_breaches(now=unanswered.created_at + 31)
                await queue.publish(events.Understood(late.id, 1, {"intent": "greet"}, [{"text": "hi"}]))
                await queue.publish(events.Note(late.id, {"author": "a", "text": "called back"}))
                await desk.agents.set_online("a", False)
                published = await _collect(pubsub)
        finally:
            await client.aclose()

        parsed = [events.parse(payload) for payload in published]
        assert None not in parsed, [p for p, e in zip(published, parsed, strict=True) if e is None]
        kinds = {e.kind for e in parsed if isinstance(e, events.HandoffChanged)}
        assert kinds == set(events.HANDOFF_KINDS)
        assert {type(e) for e in parsed} == {
            events.ConversationCreated,
            events.TurnStored,
            events.StateChanged,
            events.HandoffChanged,
            events.AgentPresence,
            events.Understood,
            events.Note,
        }
        moves = [(e.from_state, e.to_state) for e in parsed if isinstance(e, events.StateChanged)]
        assert moves[:3] == [
            (State.BOT, State.QUEUED),
            (State.QUEUED, State.ASSIGNED),
            (State.ASSIGNED, State.RESOLVED),
        ]
        transfer = next(e for e in parsed if isinstance(e, events.HandoffChanged) and e.kind == "transferred")
        assert (transfer.from_agent_id, transfer.handoff.agent_id) == ("a", "b")
        turns = [e.turn for e in parsed if isinstance(e, events.TurnStored)]
        assert [t.sender for t in turns][:2] == ["customer", "system"]  # the question, then "A joined"
        presence = [(e.agent_id, e.online) for e in parsed if isinstance(e, events.AgentPresence)]
        assert presence == [("a", True), ("b", True), ("a", False)]
        # The API's events reach agents as they were published.
        understood = next(e for e in parsed if isinstance(e, events.Understood))
        assert understood.payload["suggestions"] == [{"text": "hi"}]

    asyncio.run(main())


def test_what_baton_does_not_publish_is_ignored():
    assert events.parse({"type": "mystery"}) is None
    assert events.parse({"type": "turn"}) is None  # no conversation id, no turn
    assert events.parse_text("not json") is None
