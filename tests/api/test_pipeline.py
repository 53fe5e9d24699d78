"""The turn pipeline in-process, on real Redis and the real NLU: the state rules hold under races."""

from __future__ import annotations

import asyncio

from api.channels.base import InboundMessage
from api.inbox_worker import InboxWorker
from api.nlu_worker import NLUWorker
from api.pipeline import TurnPipeline
from api.ratelimit import RateLimiter
from bot.dialogue import DialoguePolicy
from conversations.states import State
from conversations.store import ConversationStore
from conversations.streams import Inbox
from handoff.assigner import Assigner
from handoff.parts import build_handoff
from handoff.signals import EscalationPolicy
from knowledge_index.handoff_file import HandoffConfig


def make_pipeline(store, tiny_kb, tiny_nlu, worker, scorer, replica="replica-a"):
    """A whole pipeline (escalation and queue included) on ``store``, consuming the inbox as ``replica``."""
    config = HandoffConfig.model_validate(tiny_kb.handoff)
    desk = build_handoff(store.client, store, config)
    limiter = RateLimiter(store.client, "baton:", limit=100, window=10)
    policy = DialoguePolicy.from_engine(tiny_kb, tiny_nlu)
    inbox = Inbox(store.client, store.keys, replica)
    return TurnPipeline(store, policy, worker, limiter, scorer, EscalationPolicy(config), desk, inbox)


def run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body, scorer):
    """Run ``body(pipeline, store)`` with a whole pipeline over a fresh store; everything is closed after."""

    async def main():
        worker = NLUWorker(tiny_nlu)
        try:
            async with ConversationStore.from_url(redis_url) as store:
                return await body(make_pipeline(store, tiny_kb, tiny_nlu, worker, scorer), store)
        finally:
            worker.close()

    return asyncio.run(main())


async def assign_round(pipeline: TurnPipeline) -> None:
    """One round of an assigner, as `baton serve` runs them: admit, route, tell where they stand."""
    await Assigner(pipeline.desk, "test-assigner").step(block=False)


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
        await assign_round(pipeline)
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


def test_a_message_whose_handler_died_is_handled_once_by_the_inbox_worker(
    redis_url, tiny_kb, tiny_nlu, sentiment_scorer
):
    async def body(pipeline: TurnPipeline, store: ConversationStore) -> None:
        # Stored and acknowledged to the customer, then the replica died before answering.
        accepted = await pipeline.accept(InboundMessage("web", "v7", "I want to talk to a person", "1"))
        conversation_id = accepted.conversation.id
        assert accepted.pending and accepted.entry_id is not None
        assert await pipeline.inbox.pending_count() == 1
        # The resend of the page finds it stored but not handled: still pending.
        resent = await pipeline.accept(InboundMessage("web", "v7", "I want to talk to a person", "1"))
        assert resent.duplicate and resent.pending and resent.turn.seq == accepted.turn.seq
        # Another replica's inbox worker takes the stale entry over (idle 0 ms here) and handles it.
        other = Inbox(store.client, store.keys, "replica-b")
        handled = await InboxWorker(other, pipeline.handle, reclaim_idle_ms=0).round()
        assert handled == 1 and await other.pending_count() == 0
        conversation = await store.get_conversation(conversation_id)
        assert conversation.state == State.QUEUED and conversation.handoff_count == 1
        assert conversation.handled == conversation.received == accepted.turn.seq
        # The resend's own handling, running late, changes nothing: the effects happened once.
        assert await pipeline.reply(resent) == []
        assert await pipeline.handle(conversation_id, accepted.turn.seq) == []
        turns = await store.turns(conversation_id)
        assert [t.sender for t in turns] == ["customer", "bot"]
        assert await store.client.xlen(pipeline.desk.queue.keys.stream) == 1  # one handoff announced
        again = await pipeline.accept(InboundMessage("web", "v7", "I want to talk to a person", "1"))
        assert again.duplicate and not again.pending

    run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body, sentiment_scorer)


def test_two_replicas_handling_one_message_at_once_answer_it_once(
    redis_url, tiny_kb, tiny_nlu, sentiment_scorer
):
    async def body(pipeline: TurnPipeline, store: ConversationStore) -> None:
        twin = make_pipeline(store, tiny_kb, tiny_nlu, pipeline.nlu, sentiment_scorer, replica="replica-b")
        first = await pipeline.accept(InboundMessage("web", "v9", "where is my order", "1"))
        second = await pipeline.accept(InboundMessage("web", "v9", "LM2024051234", "2"))
        # Each message is handled by both replicas at once (a reclaim racing a slow handler).
        results = await asyncio.gather(
            pipeline.handle(first.conversation.id, second.turn.seq),
            twin.handle(first.conversation.id, second.turn.seq),
            twin.handle(first.conversation.id, first.turn.seq),
            pipeline.handle(first.conversation.id, first.turn.seq),
        )
        turns = await store.turns(first.conversation.id)
        assert [t.sender for t in turns] == ["customer", "customer", "bot", "bot"]
        assert [t.reply_to for t in turns[2:]] == [1, 2]  # in order: the answer to 2 saw 1's context
        assert "LM2024051234" in turns[3].text
        assert sum(len(r) for r in results) <= 2
        stats = await pipeline.desk.metrics.snapshot()
        assert stats["conversations"] == 1  # the conversation's start is counted once

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
        await assign_round(pipeline)
        conversation_id = accepted.conversation.id
        assert (await store.get_conversation(conversation_id)).state == State.ASSIGNED
        alice = await desk.agents.get("alice")
        await desk.resolve(conversation_id, alice)
        rating = await pipeline.accept(InboundMessage("web", "v8", "/rate_4", "2"))
        assert rating.conversation.id == conversation_id and rating.conversation.state == State.RESOLVED
        thanks = await pipeline.reply(rating)
        assert thanks and thanks[0].sender == "system"
        assert await desk.records.rating(conversation_id) == 4
        # A second press is an ordinary message of a new conversation, and the rating stays 4.
        again = await pipeline.accept(InboundMessage("web", "v8", "/rate_1", "3"))
        assert again.conversation.id != conversation_id
        assert await desk.records.rating(conversation_id) == 4
        stats = await desk.metrics.snapshot()
        assert stats["ratings"]["count"] == 1 and stats["conversations_handed_off"] == 1

    run_with_pipeline(redis_url, tiny_kb, tiny_nlu, body, sentiment_scorer)
