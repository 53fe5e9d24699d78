"""The turn pipeline in-process, on real Redis and the real NLU: the state rules hold under races."""

from __future__ import annotations

import asyncio

from api.channels.base import InboundMessage
from api.nlu_worker import NLUWorker
from api.pipeline import TurnPipeline
from api.ratelimit import RateLimiter
from bot.dialogue import DialoguePolicy
from conversations.states import State
from conversations.store import ConversationStore


def run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body):
    """Run ``body(pipeline, store)`` with a pipeline over a fresh store; everything is closed after."""

    async def main():
        worker = NLUWorker(tiny_nlu)
        try:
            async with ConversationStore.from_url(redis_url) as store:
                limiter = RateLimiter(store.client, "baton:", limit=100, window=10)
                policy = DialoguePolicy.from_engine(tiny_kb, tiny_nlu)
                return await body(TurnPipeline(store, policy, worker, limiter), store)
        finally:
            worker.close()

    return asyncio.run(main())


def test_a_handoff_while_the_bot_thinks_silences_the_bot(redis_url, tiny_kb, tiny_nlu):
    async def body(pipeline: TurnPipeline, store: ConversationStore) -> None:
        accepted = await pipeline.accept(InboundMessage("web", "v1", "how much is shipping", "m1"))
        assert accepted.bot_answers
        # Another replica hands the conversation to a person before this one writes the answer.
        await store.transition(accepted.conversation.id, State.QUEUED, reason="explicit_request")
        assert await pipeline.reply(accepted) == []
        turns = await store.turns(accepted.conversation.id)
        assert [t.sender for t in turns] == ["customer"]
        assert turns[0].nlu["intent"] == "faq/shipping_cost"  # understood and kept for the agent

    run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body)


def test_racing_requests_for_a_person_queue_the_conversation_once(redis_url, tiny_kb, tiny_nlu):
    async def body(pipeline: TurnPipeline, store: ConversationStore) -> None:
        first = await pipeline.accept(InboundMessage("web", "v2", "转人工", "a"))
        second = await pipeline.accept(InboundMessage("web", "v2", "I want to talk to a person", "b"))
        replies = await asyncio.gather(pipeline.reply(first), pipeline.reply(second))
        conversation = await store.get_conversation(first.conversation.id)
        assert conversation.state == State.QUEUED and conversation.handoff_count == 1
        assert conversation.last_reason == "explicit_request"
        # The first confirms the handoff; the second finds the conversation queued and stays silent.
        assert sorted(len(r) for r in replies) == [0, 1]
        events = await store.events(first.conversation.id)
        assert [e["to"] for _, e in events if e["type"] == "transition"] == ["queued"]

    run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body)


def test_quick_messages_of_one_conversation_are_answered_in_order(redis_url, tiny_kb, tiny_nlu):
    async def body(pipeline: TurnPipeline, store: ConversationStore) -> None:
        asked = await pipeline.accept(InboundMessage("web", "v3", "where is my order", "1"))
        number = await pipeline.accept(InboundMessage("web", "v3", "LM2024051234", "2"))
        # Both replies race; the second must see the context the first one saved (the question asked).
        first, second = await asyncio.gather(pipeline.reply(asked), pipeline.reply(number))
        assert first[0].text == "What is your order number?"
        assert "LM2024051234" in second[0].text
        turns = await store.turns(asked.conversation.id)
        assert [t.sender for t in turns] == ["customer", "customer", "bot", "bot"]

    run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body)
