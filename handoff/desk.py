"""The handoff desk: every change of hands of a conversation, with what the customer is told.

Escalate (bot -> queued, enqueue, tell the customer where they stand), an agent's message
(with the first-response time), transfer, resolve (and ask for a rating), hand back to the
bot, close a waiting chat, and record the rating. Each step checks the conversation's state
in Redis as it writes (`ConversationStore.transition`), so two replicas or two agents acting
at once cannot both succeed, and the metrics are counted by whoever succeeded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from agent_assist.summary import summarize
from conversations.model import Conversation, Turn
from conversations.states import InvalidTransition, State
from conversations.store import ConversationStore
from handoff.agents import Agent, AgentDirectory
from handoff.metrics import Metrics
from handoff.notices import notice, rating_buttons, standing_text
from handoff.queue import Handoff, HandoffQueue, HandoffRequest
from handoff.records import Records
from handoff.signal_store import SignalStore
from handoff.signals import SEVERITY, Escalation
from knowledge_index.handoff_file import HandoffConfig

log = logging.getLogger(__name__)

SUMMARY_TURNS = 200  # the queue's summary reads at most this many turns (escalations come far sooner)


class DeskError(Exception):
    """An agent's action that cannot be done now.

    Attributes:
        code: a short machine-readable code (``not_yours``, ``not_assigned``, ...).
        status: the HTTP status the API answers with.
    """

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass
class HandoffDesk:
    """Moves conversations between the bot, the queue and agents."""

    store: ConversationStore
    queue: HandoffQueue
    agents: AgentDirectory
    metrics: Metrics
    records: Records
    signals: SignalStore
    config: HandoffConfig

    def skill_for(self, intent: str | None) -> str:
        """The agent skill that handles ``intent`` (``handoff.yml``'s map, else the default)."""
        return self.config.skills.get(intent or "", self.config.default_skill)

    async def escalate(
        self, conversation_id: str, escalation: Escalation, *, intent: str | None, language: str, channel: str
    ) -> Handoff | None:
        """Hand the conversation to the queue; None if it was no longer with the bot.

        The customer is told where they stand (or invited to leave a message when nobody is
        online), and the queue tries to assign it at once; the assigner is the safety net.
        """
        try:
            conversation = await self.store.transition(
                conversation_id, State.QUEUED, expected_from=State.BOT, reason=escalation.reason
            )
        except InvalidTransition:  # another replica escalated it first, or an agent has it
            return None
        customer = await self.store.get_customer(conversation.customer_id)
        # The queue shows this summary, so an agent can choose a chat before opening it.
        turns = await self.store.turns(conversation_id, limit=SUMMARY_TURNS)
        request = HandoffRequest(
            conversation_id=conversation_id,
            customer_id=conversation.customer_id,
            channel=channel,
            language=language,
            skill=self.skill_for(intent),
            reasons=escalation.reasons,
            severity=escalation.severity,
            vip=customer is not None and customer.tier in self.config.vip_tiers,
            summary=summarize([t.to_dict() for t in turns], escalation.reasons, language),
        )
        handoff = await self.queue.enqueue(request, conversation.handoff_count)
        await self.metrics.handed_off(
            escalation.reason, channel, language, first=conversation.handoff_count == 1
        )
        await self.queue.admit(handoff.id)
        await self.queue.match()
        await self.tell_standing(handoff.id)
        return await self.queue.get(handoff.id)

    async def recover(self, conversation: Conversation) -> Handoff | None:
        """Enqueue a queued conversation whose handoff was never written (a crash right after
        its ``bot -> queued``); None when it has its handoff. Safe to call on every message."""
        if conversation.state != State.QUEUED or not conversation.handoff_count:
            return None
        latest = await self.queue.for_conversation(conversation.id)
        if latest is not None and latest.handoff_number >= conversation.handoff_count:
            return None
        reason = conversation.last_reason or "explicit_request"
        log.warning("conversation %s was queued without a handoff; enqueuing it now", conversation.id)
        request = HandoffRequest(
            conversation_id=conversation.id,
            customer_id=conversation.customer_id,
            channel=conversation.channel,
            language=conversation.language or "en",
            skill=self.config.default_skill,
            reasons=(reason,),
            severity=SEVERITY.get(reason, 2),
            vip=False,
        )
        handoff = await self.queue.enqueue(request, conversation.handoff_count)
        await self.queue.admit(handoff.id)
        await self.queue.match()
        return handoff

    async def tell_standing(self, handoff_id: str) -> Turn | None:
        """Tell a waiting customer their place in the queue (nothing once an agent has them)."""
        handoff = await self.queue.get(handoff_id)
        if handoff is None or handoff.status != "waiting":
            return None
        standing = await self.queue.standing(handoff_id)
        text = standing_text(standing.position, standing.estimated_seconds, handoff.ticket, handoff.language)
        return await self.store.append_turn(
            handoff.conversation_id, "system", text, language=handoff.language
        )

    def follow_queue(self) -> None:
        """Have the queue call `joined` after each assignment and count each breach, in
        whichever process assigns (``baton serve``'s assigners or ``python -m handoff.assigner``)."""
        self.queue.on_assigned = self.joined
        self.queue.on_breach = self.breached

    async def breached(self, handoff: Handoff) -> None:
        """Count a first-response breach (the queue marks each handoff once)."""
        del handoff  # the count is all the metrics keep
        await self.metrics.breached()

    async def joined(self, handoff: Handoff) -> None:
        """Tell the customer an agent has taken the chat, and count the wait (once per assignment)."""
        agent = await self.agents.get(handoff.agent_id or "")
        name = agent.name if agent else handoff.agent_id
        await self.store.append_turn(
            handoff.conversation_id,
            "system",
            notice("joined", handoff.language, name=name),
            language=handoff.language,
        )
        if handoff.assigned_at is not None and handoff.transfers == 0:
            await self.metrics.waited(max(0.0, handoff.assigned_at - handoff.created_at))

    async def _mine(self, conversation_id: str, agent: Agent) -> tuple[Conversation, Handoff]:
        """The conversation and its handoff, if ``agent`` has it (a supervisor may act on any)."""
        conversation = await self.store.get_conversation(conversation_id)
        handoff = await self.queue.for_conversation(conversation_id)
        if conversation is None or handoff is None:
            raise DeskError("not_found", "no handed-off conversation has this id", 404)
        if conversation.state != State.ASSIGNED or handoff.status != "assigned":
            raise DeskError(
                "not_assigned", f"the conversation is {conversation.state.value}, not with an agent"
            )
        if handoff.agent_id != agent.id and agent.role != "supervisor":
            raise DeskError("not_yours", "this conversation is assigned to another agent", 403)
        return conversation, handoff

    async def send(self, conversation_id: str, agent: Agent, text: str) -> Turn:
        """Store the agent's message (channels deliver it); the first one stops the first-response clock."""
        conversation, handoff = await self._mine(conversation_id, agent)
        turn = await self.store.append_turn(
            conversation_id, "agent", text, language=conversation.language, author=agent.id
        )
        seconds = await self.queue.record_first_response(handoff.id)
        if seconds is not None:
            await self.metrics.first_response(seconds)
        return turn

    async def resolve(self, conversation_id: str, agent: Agent) -> Conversation:
        """End the conversation and ask the customer for a 1-5 rating."""
        conversation, handoff = await self._mine(conversation_id, agent)
        try:
            resolved = await self.store.transition(
                conversation_id, State.RESOLVED, expected_from=State.ASSIGNED
            )
        except InvalidTransition as exc:
            raise DeskError("not_assigned", str(exc)) from exc
        await self.queue.close(handoff.id, "resolved")
        await self.metrics.ended("resolved")
        language = conversation.language
        await self.store.append_turn(
            conversation_id,
            "system",
            notice("resolved", language),
            language=language,
            buttons=rating_buttons(language),
        )
        return resolved

    async def hand_back(self, conversation_id: str, agent: Agent) -> Conversation:
        """Give the conversation back to the bot; its escalation signals start again from zero."""
        conversation, handoff = await self._mine(conversation_id, agent)
        try:
            back = await self.store.transition(conversation_id, State.BOT, expected_from=State.ASSIGNED)
        except InvalidTransition as exc:
            raise DeskError("not_assigned", str(exc)) from exc
        await self.queue.close(handoff.id, "handback")
        await self.signals.reset(conversation_id)
        await self.metrics.ended("handback")
        await self.store.append_turn(
            conversation_id,
            "system",
            notice("handback", conversation.language),
            language=conversation.language,
        )
        return back

    async def transfer(
        self, conversation_id: str, agent: Agent, *, to_agent: str | None = None, to_skill: str | None = None
    ) -> Handoff:
        """Pass the chat to another agent (who must be online with room) or back to a skill's queue."""
        if (to_agent is None) == (to_skill is None):
            raise DeskError("bad_request", "name exactly one of to_agent and to_skill", 400)
        conversation, handoff = await self._mine(conversation_id, agent)
        if to_agent is not None:
            result = await self.queue.transfer_to_agent(handoff.id, to_agent)
            if not result.ok:
                raise DeskError(result.reason or "refused", f"cannot transfer to {to_agent}: {result.reason}")
        else:
            await self.queue.transfer_to_skill(handoff.id, to_skill or self.config.default_skill)
        await self.store.append_turn(
            conversation_id,
            "system",
            notice("transferred", conversation.language),
            language=conversation.language,
        )
        if to_skill is not None:
            await self.queue.match()
            await self.tell_standing(handoff.id)
        moved = await self.queue.get(handoff.id)
        assert moved is not None
        return moved

    async def close_waiting(self, conversation_id: str, agent: Agent) -> Conversation:
        """Close a chat or left message that is still waiting (after answering it some other way)."""
        handoff = await self.queue.for_conversation(conversation_id)
        if handoff is None or handoff.status != "waiting":
            raise DeskError("not_waiting", "the conversation is not waiting in the queue")
        if agent.role != "supervisor" and handoff.skill not in agent.skills:
            raise DeskError("not_yours", "this conversation waits for another skill", 403)
        try:
            closed = await self.store.transition(conversation_id, State.RESOLVED, expected_from=State.QUEUED)
        except InvalidTransition as exc:
            raise DeskError("not_waiting", str(exc)) from exc
        await self.queue.close(handoff.id, "closed")
        await self.metrics.ended("closed")
        return closed

    async def rate(self, conversation: Conversation, score: int) -> Turn | None:
        """Record a rating of a conversation a person resolved; None if it cannot be rated (again)."""
        if conversation.state != State.RESOLVED or not conversation.handoff_count:
            return None
        if not await self.records.rate(conversation.id, score):
            return None
        await self.metrics.rated(score)
        return await self.store.append_turn(
            conversation.id, "system", notice("rated", conversation.language), language=conversation.language
        )

    async def add_note(self, conversation_id: str, agent: Agent, text: str) -> dict[str, Any]:
        """An internal note on a conversation the agent may see."""
        conversation = await self.store.get_conversation(conversation_id)
        if conversation is None:
            raise DeskError("not_found", "no conversation has this id", 404)
        try:
            return await self.records.add_note(conversation_id, agent.id, text)
        except ValueError as exc:
            raise DeskError("bad_request", str(exc), 400) from exc
