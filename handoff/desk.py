"""The handoff desk: the agents' side of every change of hands, with what the customer is told.

Escalate (what the queue keeps of an escalation; where the customer stands once admitted), an
agent's message (with the first-response time), transfer, resolve (and ask for a rating), hand
back to the bot, close a waiting chat, and record the rating. Each is one step of the queue
(`handoff.queue`) that checks the conversation's state and its handoff inside Redis as it
writes them, together with the notice and the counts: two replicas or two agents acting at
once cannot both succeed, and nothing is half done if a process dies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent_assist.summary import summarize
from conversations import failpoints
from conversations.model import Conversation, Turn
from conversations.states import State
from conversations.store import ConversationStore, draft_turn
from handoff.agents import Agent, AgentDirectory
from handoff.handoffs import Handoff, HandoffRequest, Outcome
from handoff.metrics import Metrics, ended_counts
from handoff.notices import notice, rating_buttons, standing_text
from handoff.queue import HandoffQueue, HandoffRefused
from handoff.records import Records
from handoff.routing import match
from handoff.signals import Escalation
from handoff.standing import standing
from knowledge_index.handoff_file import HandoffConfig

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
    config: HandoffConfig

    def skill_for(self, intent: str | None) -> str:
        """The agent skill that handles ``intent`` (``handoff.yml``'s map, else the default)."""
        return self.config.skills.get(intent or "", self.config.default_skill)

    async def request(
        self,
        conversation: Conversation,
        escalation: Escalation,
        *,
        intent: str | None,
        language: str,
        channel: str,
    ) -> HandoffRequest:
        """What the queue keeps of an escalation: skill, priority, and a summary for the queue."""
        customer = await self.store.get_customer(conversation.customer_id)
        # The queue shows this summary, so an agent can choose a chat before opening it.
        turns = await self.store.turns(conversation.id, limit=SUMMARY_TURNS)
        return HandoffRequest(
            conversation_id=conversation.id,
            customer_id=conversation.customer_id,
            channel=channel,
            language=language,
            skill=self.skill_for(intent),
            reasons=escalation.reasons,
            severity=escalation.severity,
            vip=customer is not None and customer.tier in self.config.vip_tiers,
            summary=summarize([t.to_dict() for t in turns], escalation.reasons, language),
        )

    async def escalate(
        self, conversation_id: str, escalation: Escalation, *, intent: str | None, language: str, channel: str
    ) -> Handoff | None:
        """Hand a conversation the bot holds to the queue (no bot turn with it); None if the bot
        no longer holds it. An assigner admits it and tells the customer where they stand."""
        conversation = await self.store.get_conversation(conversation_id)
        if conversation is None or conversation.state != State.BOT:
            return None
        request = await self.request(
            conversation, escalation, intent=intent, language=language, channel=channel
        )
        return await self.queue.escalate(request, escalation.reason, first=conversation.handoff_count == 0)

    async def tell_standing(self, handoff_id: str) -> Turn | None:
        """Tell a waiting customer their place in the queue (nothing once an agent has them).

        Written once per handoff and transfer, however often a retried step calls this.
        """
        handoff = await self.queue.get(handoff_id)
        if handoff is None or handoff.status != "waiting":
            return None
        where = await standing(self.queue, handoff_id)
        text = standing_text(where.position, where.estimated_seconds, handoff.ticket, handoff.language)
        return await self.store.append_turn(
            handoff.conversation_id,
            "system",
            text,
            language=handoff.language,
            once=f"standing:{handoff.id}:{handoff.transfers}",
        )

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

    async def send(
        self, conversation_id: str, agent: Agent, text: str, client_message_id: str | None = None
    ) -> Turn:
        """Store the agent's message (channels deliver it); the first one stops the first-response clock.

        A retry with the same ``client_message_id`` is stored once.
        """
        conversation, handoff = await self._mine(conversation_id, agent)
        turn = draft_turn(
            conversation_id, "agent", text, conversation.channel, conversation.language, author=agent.id
        )
        try:
            stored, _seconds = await self.queue.send(
                handoff, actor=_actor(agent), turn=turn, client_message_id=client_message_id
            )
        except HandoffRefused as exc:
            raise _refused(exc) from exc
        failpoints.reach("agent_stored")
        return stored

    async def resolve(self, conversation_id: str, agent: Agent) -> Conversation:
        """End the conversation and ask the customer for a 1-5 rating."""
        conversation, handoff = await self._mine(conversation_id, agent)
        language = conversation.language
        ask = self._notice(conversation, notice("resolved", language), buttons=rating_buttons(language))
        return await self._finish(
            handoff, agent, State.ASSIGNED, State.RESOLVED, "resolved", ask, forget_signals=False
        )

    async def hand_back(self, conversation_id: str, agent: Agent) -> Conversation:
        """Give the conversation back to the bot; its escalation signals start again from zero."""
        conversation, handoff = await self._mine(conversation_id, agent)
        back = self._notice(conversation, notice("handback", conversation.language))
        return await self._finish(
            handoff, agent, State.ASSIGNED, State.BOT, "handback", back, forget_signals=True
        )

    async def transfer(
        self, conversation_id: str, agent: Agent, *, to_agent: str | None = None, to_skill: str | None = None
    ) -> Handoff:
        """Pass the chat to another agent (who must be online with room) or back to a skill's queue."""
        if (to_agent is None) == (to_skill is None):
            raise DeskError("bad_request", "name exactly one of to_agent and to_skill", 400)
        conversation, handoff = await self._mine(conversation_id, agent)
        told = self._notice(conversation, notice("transferred", conversation.language))
        if to_agent is not None:
            result = await self.queue.transfer_to_agent(
                handoff.id, to_agent, actor=_actor(agent), notice_turn=told
            )
        else:
            result = await self.queue.transfer_to_skill(
                handoff.id, to_skill or self.config.default_skill, actor=_actor(agent), notice_turn=told
            )
        if not result.ok:
            target = to_agent or to_skill
            raise DeskError(result.reason or "refused", f"cannot transfer to {target}: {result.reason}")
        if to_skill is not None:
            await match(self.queue)
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
        return await self._finish(
            handoff, agent, State.QUEUED, State.RESOLVED, "closed", None, forget_signals=False
        )

    async def _finish(
        self,
        handoff: Handoff,
        agent: Agent,
        expected: State,
        target: State,
        outcome: Outcome,
        told: Turn | None,
        *,
        forget_signals: bool,
    ) -> Conversation:
        try:
            return await self.queue.finish(
                handoff,
                actor=_actor(agent),
                expected=expected,
                target=target,
                outcome=outcome,
                notice_turn=told,
                forget_signals=forget_signals,
                counts=ended_counts(outcome),
            )
        except HandoffRefused as exc:
            raise _refused(exc) from exc

    @staticmethod
    def _notice(conversation: Conversation, text: str, buttons: list[dict[str, str]] | None = None) -> Turn:
        return draft_turn(
            conversation.id,
            "system",
            text,
            conversation.channel,
            conversation.language,
            buttons=buttons or (),
        )

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


def _actor(agent: Agent) -> str:
    """Who the queue checks holds a chat: the agent, or '' for a supervisor (any chat)."""
    return "" if agent.role == "supervisor" else agent.id


def _refused(exc: HandoffRefused) -> DeskError:
    """The queue's refusal as the API's error."""
    if exc.reason == "not_yours":
        return DeskError("not_yours", "this conversation is assigned to another agent", 403)
    if exc.reason == "not_found":
        return DeskError("not_found", "no handed-off conversation has this id", 404)
    return DeskError(exc.reason, f"the conversation is {exc.state or 'gone'}, not as expected")
