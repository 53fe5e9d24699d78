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
from handoff.agents import AgentDirectory
from handoff.desk import HandoffDesk
from handoff.metrics import Metrics
from handoff.queue import HandoffQueue
from handoff.records import Records
from handoff.signal_store import SignalStore
from handoff.signals import EscalationPolicy
from knowledge_index.handoff_file import HandoffConfig


def run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body, scorer):
    """Run ``body(pipeline, store)`` with a whole pipeline (escalation and queue included) over a
    fresh store; everything is closed after."""

    async def main():
        worker = NLUWorker(tiny_nlu)
        try:
            async with ConversationStore.from_url(redis_url) as store:
                client = store.client
                config = HandoffConfig.model_validate(tiny_kb.handoff)
                queue = HandoffQueue(client, store, config=config)
                signals = SignalStore(client)
                desk = HandoffDesk(
                    store, queue, AgentDirectory(client), Metrics(client), Records(client), signals, config
                )
                limiter = RateLimiter(client, "baton:", limit=100, window=10)
                policy = DialoguePolicy.from_engine(tiny_kb, tiny_nlu)
                pipeline = TurnPipeline(
                    store, policy, worker, limiter, scorer, EscalationPolicy(config), signals, desk
                )
                return await body(pipeline, store)
        finally:
            worker.close()

    return asyncio.run(main())


def test_a_handoff_while_the_bot_thinks_silences_the_bot(redis_url, tiny_kb, tiny_nlu, sentiment_scorer):
    async def body(pipeline: TurnPipeline, store: ConversationStore) -> None:
        accepted = await pipeline.accept(InboundMessage("web", "v1", "how much is shipping", "m1"))
        assert accepted.bot_answers
        # Another replica hands the conversation to a person before this one writes the answer.
        await store.transition(accepted.conversation.id, State.QUEUED, reason="explicit_request")
        assert await pipeline.reply(accepted) == []
        turns = await store.turns(accepted.conversation.id)
        assert [t.sender for t in turns] == ["customer"]
        assert turns[0].nlu["intent"] == "faq/shipping_cost"  # understood and kept for the agent

    run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body, sentiment_scorer)


def test_racing_requests_for_a_person_queue_the_conversation_once(
    redis_url, tiny_kb, tiny_nlu, sentiment_scorer
):
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

    run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body, sentiment_scorer)


def test_quick_messages_of_one_conversation_are_answered_in_order(
    redis_url, tiny_kb, tiny_nlu, sentiment_scorer
):
    async def body(pipeline: TurnPipeline, store: ConversationStore) -> None:
        asked = await pipeline.accept(InboundMessage("web", "v3", "where is my order", "1"))
        number = await pipeline.accept(InboundMessage("web", "v3", "LM2024051234", "2"))
        # Both replies race; the second must see the context the first one saved (the question asked).
        first, second = await asyncio.gather(pipeline.reply(asked), pipeline.reply(number))
        assert first[0].text == "What is your order number?"
        assert "LM2024051234" in second[0].text
        turns = await store.turns(asked.conversation.id)
        assert [t.sender for t in turns] == ["customer", "customer", "bot", "bot"]

    run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body, sentiment_scorer)


def test_an_angry_message_hands_over_in_its_own_turn_with_an_apology_and_the_queue_notice(
    redis_url, tiny_kb, tiny_nlu, sentiment_scorer
):
    async def body(pipeline: TurnPipeline, store: ConversationStore) -> None:
        calm = await pipeline.accept(InboundMessage("web", "v4", "how much is shipping", "1"))
        await pipeline.reply(calm)
        angry = await pipeline.accept(
            InboundMessage("web", "v4", "this is the worst service ever, you useless idiots!!", "2")
        )
        replies = await pipeline.reply(angry)
        conversation = await store.get_conversation(angry.conversation.id)
        assert conversation.state == State.QUEUED and conversation.last_reason == "negative_sentiment"
        assert replies[0].sender == "bot" and "sorry" in replies[0].text.lower()
        turns = await store.turns(conversation.id)
        assert turns[-1].sender == "system" and "message" in turns[-1].text  # nobody online: leave a message
        customer_turn = next(t for t in turns if t.seq == angry.turn.seq)
        assert customer_turn.nlu["sentiment"]["anger"] >= 0.7
        assert customer_turn.nlu["escalation"]["reasons"][0] == "negative_sentiment"
        handoff = await pipeline.desk.queue.for_conversation(conversation.id)
        assert handoff is not None and handoff.status == "waiting" and handoff.ticket
        # While it waits, the bot stays silent, but the message is still understood for the agent.
        later = await pipeline.accept(InboundMessage("web", "v4", "how much is shipping??", "3"))
        assert await pipeline.reply(later) == []
        stored = (await store.turns(conversation.id, after_seq=later.turn.seq - 1, limit=1))[0]
        assert stored.nlu["intent"] == "faq/shipping_cost"

    run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body, sentiment_scorer)


def test_mild_annoyance_about_an_answerable_question_stays_with_the_bot(
    redis_url, tiny_kb, tiny_nlu, sentiment_scorer
):
    async def body(pipeline: TurnPipeline, store: ConversationStore) -> None:
        accepted = await pipeline.accept(
            InboundMessage("web", "v5", "shipping is a bit slow, annoying. how much does shipping cost?", "1")
        )
        replies = await pipeline.reply(accepted)
        conversation = await store.get_conversation(accepted.conversation.id)
        assert conversation.state == State.BOT and replies and replies[0].sender == "bot"

    run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body, sentiment_scorer)


def test_two_messages_the_bot_cannot_understand_hand_over_on_the_second(
    redis_url, tiny_kb, tiny_nlu, sentiment_scorer
):
    async def body(pipeline: TurnPipeline, store: ConversationStore) -> None:
        first = await pipeline.accept(InboundMessage("app", "u6", "xqzv blorp", "1"))
        await pipeline.reply(first)
        assert (await store.get_conversation(first.conversation.id)).state == State.BOT
        second = await pipeline.accept(InboundMessage("app", "u6", "zzkq wub wub", "2"))
        await pipeline.reply(second)
        conversation = await store.get_conversation(first.conversation.id)
        assert conversation.state == State.QUEUED and conversation.last_reason == "fallback_streak"

    run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body, sentiment_scorer)


def test_a_conversation_queued_without_its_handoff_is_enqueued_on_the_next_message(
    redis_url, tiny_kb, tiny_nlu, sentiment_scorer
):
    async def body(pipeline: TurnPipeline, store: ConversationStore) -> None:
        accepted = await pipeline.accept(InboundMessage("web", "v7", "hello", "1"))
        # A crash right after bot -> queued: the conversation waits, but the queue never heard of it.
        await store.transition(accepted.conversation.id, State.QUEUED, reason="explicit_request")
        assert await pipeline.desk.queue.for_conversation(accepted.conversation.id) is None
        await pipeline.reply(await pipeline.accept(InboundMessage("web", "v7", "anyone there?", "2")))
        handoff = await pipeline.desk.queue.for_conversation(accepted.conversation.id)
        assert (
            handoff is not None and handoff.status == "waiting" and handoff.reasons == ("explicit_request",)
        )

    run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body, sentiment_scorer)


def test_a_rating_button_rates_the_resolved_conversation_once_instead_of_opening_a_new_one(
    redis_url, tiny_kb, tiny_nlu, sentiment_scorer
):
    async def body(pipeline: TurnPipeline, store: ConversationStore) -> None:
        desk = pipeline.desk
        await desk.agents.seed_demo()
        await desk.agents.set_online("alice", True)
        accepted = await pipeline.accept(InboundMessage("web", "v8", "转人工", "1"))
        await pipeline.reply(accepted)
        conversation_id = accepted.conversation.id
        assert (await store.get_conversation(conversation_id)).state == State.ASSIGNED
        alice = await desk.agents.get("alice")
        await desk.resolve(conversation_id, alice)
        rating = await pipeline.accept(InboundMessage("web", "v8", "/rate_4", "2"))
        assert rating.conversation.id == conversation_id and rating.rating == 4
        thanks = await pipeline.reply(rating)
        assert thanks and thanks[0].sender == "system"
        assert await desk.records.rating(conversation_id) == 4
        # A second press is an ordinary message of a new conversation, and the rating stays 4.
        again = await pipeline.accept(InboundMessage("web", "v8", "/rate_1", "3"))
        assert again.conversation.id != conversation_id and again.rating is None
        assert await desk.records.rating(conversation_id) == 4
        stats = await desk.metrics.snapshot()
        assert stats["ratings"]["count"] == 1 and stats["conversations_handed_off"] == 1

    run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body, sentiment_scorer)
