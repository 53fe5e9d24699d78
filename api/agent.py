"""The agent API under ``/api/v1/agent``: sign in, the queue, taking and handling chats, live events.

Agents sign in with their id and password (`POST /session`) and get a bearer token; every
other request sends it as ``Authorization: Bearer <token>`` (the WebSocket, which browsers
cannot give headers, as ``?token=``). Signing out ends that token at once.

What an agent may see: conversations assigned to them and the ones waiting for one of their
skills. A supervisor sees and may act on all. Anything else answers 403, by URL or by API.
A desk action that cannot be done now (`handoff.desk.DeskError`: the chat is not assigned, not
yours, no longer waiting) answers with its status and code, in the usual error shape (`api.app`).

The WebSocket (`/ws`) sends JSON frames:

- ``hello``: the agent, the chats they have, and the queue they can see;
- ``queue``: a handoff's change (``event`` = the queue's event type, ``handoff``) when the agent
  may see it: a new chat waiting, one taken, closed, a breach of the first-response time;
- ``assigned``: a chat was assigned to this agent, with its whole handoff package;
- ``turn``: a new turn in one of the agent's chats (the customer's, the bot's, a colleague's);
- ``understood``: the intent, sentiment and fresh suggested replies for a customer's message;
- ``state``: one of the agent's chats changed state; ``pong`` answers ``{"type": "ping"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field

from api.auth import TokenError, make_token, verify_token
from api.channels.app import bearer
from api.errors import ApiError, forbidden, not_found, unauthorized
from api.events import Listened
from api.service import Service
from conversations.states import State
from handoff import events
from handoff.agents import Agent
from handoff.events import AgentPresence, HandoffChanged, StateChanged, TurnStored, Understood
from handoff.handoffs import Handoff
from handoff.routing import match

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/agent", tags=["agent"])

TOKEN_PURPOSE = "agent"
SESSIONS_KEPT_SECONDS = 7 * 86400
MAX_AGENT_MESSAGE_CHARS = 4000


# -- sign in --------------------------------------------------------------------------------


class SignIn(BaseModel):
    """An agent's credentials."""

    agent_id: str = Field(min_length=1, max_length=100, description="the agent's login id")
    password: str = Field(min_length=1, max_length=200)


def _service(request: Request) -> Service:
    return request.app.state.service


def _sessions_key(service: Service, agent_id: str) -> str:
    return f"{service.settings.redis_prefix}agent:sessions:{agent_id}"


async def agent_from_token(service: Service, token: str | None) -> Agent:
    """The signed-in agent a token belongs to.

    Raises:
        ApiError: 401 when the token is missing, malformed, expired or signed out.
    """
    if not token:
        raise unauthorized(
            "sign in first: send Authorization: Bearer <token> from POST /api/v1/agent/session"
        )
    try:
        subject = verify_token(service.web_secret, TOKEN_PURPOSE, token)
    except TokenError as exc:
        raise unauthorized(f"bad agent token: {exc}") from exc
    session, _, agent_id = subject.partition(":")
    if not await service.redis.sismember(_sessions_key(service, agent_id), session):
        raise unauthorized("this sign-in has ended; sign in again")
    agent = await service.agents.get(agent_id)
    if agent is None:
        raise unauthorized("this agent no longer exists")
    return agent


async def current_agent(request: Request, authorization: Annotated[str | None, Header()] = None) -> Agent:
    """FastAPI dependency: the agent of the request's bearer token."""
    return await agent_from_token(_service(request), bearer(authorization))


CurrentAgent = Annotated[Agent, Depends(current_agent)]


@router.post("/session")
async def sign_in(body: SignIn, request: Request) -> dict[str, Any]:
    """Sign in; the answer's ``token`` authorises every other agent request."""
    service = _service(request)
    agent = await service.agents.verify(body.agent_id, body.password)
    if agent is None:
        raise unauthorized("unknown agent id or wrong password")
    session = secrets.token_hex(8)
    ttl = service.settings.agent_token_hours * 3600
    key = _sessions_key(service, agent.id)
    await service.redis.sadd(key, session)
    await service.redis.expire(key, SESSIONS_KEPT_SECONDS)
    token = make_token(service.web_secret, TOKEN_PURPOSE, f"{session}:{agent.id}", ttl)
    return {"token": token, "expires_in": int(ttl), "agent": agent.to_dict()}


@router.delete("/session")
async def sign_out(request: Request, authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """Sign out: the token stops working, and the agent goes offline."""
    service = _service(request)
    token = bearer(authorization)
    agent = await agent_from_token(service, token)
    session = verify_token(service.web_secret, TOKEN_PURPOSE, token or "").partition(":")[0]
    await service.redis.srem(_sessions_key(service, agent.id), session)
    await service.agents.set_online(agent.id, False)
    return {"signed_out": True}


@router.get("/me")
async def me(agent: CurrentAgent, request: Request) -> dict[str, Any]:
    """The signed-in agent, whether they are online, and how many chats they have."""
    return await _agent_view(_service(request), agent)


class Status(BaseModel):
    """Online or not."""

    online: bool


@router.put("/status")
async def set_status(body: Status, agent: CurrentAgent, request: Request) -> dict[str, Any]:
    """Go online (chats are routed to you) or offline (no new chats; the ones you have stay yours)."""
    service = _service(request)
    await service.agents.set_online(agent.id, body.online)
    if body.online:
        await match(service.queue)
    return await _agent_view(service, agent)


async def _agent_view(service: Service, agent: Agent) -> dict[str, Any]:
    online = await service.agents.is_online(agent.id)
    return {**agent.to_dict(), "online": online, "load": await service.agents.load(agent.id)}


@router.get("/agents")
async def list_agents(agent: CurrentAgent, request: Request) -> dict[str, Any]:
    """Every agent with skills, languages, online state and load (to pick whom to transfer to)."""
    service = _service(request)
    everyone = await service.agents.all()
    online = {a.id for a in await service.agents.online()}
    loads = await service.agents.loads([a.id for a in everyone])
    return {"agents": [{**a.to_dict(), "online": a.id in online, "load": loads[a.id]} for a in everyone]}


# -- the queue ------------------------------------------------------------------------------


def can_see(agent: Agent, handoff: Handoff) -> bool:
    """True if ``agent`` may see ``handoff``: theirs, or waiting for one of their skills (supervisors: all)."""
    if agent.role == "supervisor":
        return True
    if handoff.status == "assigned":
        return handoff.agent_id == agent.id
    return handoff.status in ("new", "waiting") and handoff.skill in agent.skills


def handoff_view(handoff: Handoff, now: float | None = None) -> dict[str, Any]:
    """A handoff as the API shows it, with how long the customer has waited."""
    now = time.time() if now is None else now
    view = handoff.to_dict()
    end = handoff.assigned_at or handoff.closed_at or now
    view["wait_seconds"] = round(max(0.0, end - handoff.created_at), 1)
    return view


@router.get("/queue")
async def queue(agent: CurrentAgent, request: Request) -> dict[str, Any]:
    """Chats waiting for the agent's skills (a supervisor: all), best priority first; left messages included."""
    service = _service(request)
    skills = None if agent.role == "supervisor" else set(agent.skills)
    waiting = await service.queue.waiting(skills)
    return {"waiting": [handoff_view(h) for h in waiting if can_see(agent, h)]}


@router.get("/chats")
async def chats(agent: CurrentAgent, request: Request) -> dict[str, Any]:
    """The chats assigned to the agent."""
    service = _service(request)
    return {"chats": [handoff_view(h) for h in await service.queue.assigned_to(agent.id)]}


@router.post("/handoffs/{handoff_id}/accept")
async def accept(handoff_id: str, agent: CurrentAgent, request: Request) -> dict[str, Any]:
    """Take a waiting chat from the queue (it must be waiting for one of the agent's skills)."""
    service = _service(request)
    handoff = await service.queue.get(handoff_id)
    if handoff is None:
        raise not_found("no handoff has this id")
    if not can_see(agent, handoff):
        raise forbidden("this chat waits for a skill you do not have")
    result = await service.queue.claim(handoff_id, agent.id)
    if not result.ok:
        raise ApiError(409, result.reason or "refused", f"cannot take this chat: {result.reason}")
    taken = await service.queue.get(handoff_id)
    assert taken is not None
    return {"handoff": handoff_view(taken)}


# -- one conversation -----------------------------------------------------------------------


async def _visible(service: Service, agent: Agent, conversation_id: str) -> Handoff:
    """The conversation's handoff, if ``agent`` may open it."""
    handoff = await service.queue.for_conversation(conversation_id)
    if handoff is None:
        raise not_found("no handed-off conversation has this id")
    if not can_see(agent, handoff):
        raise forbidden("this conversation is not yours")
    return handoff


@router.get("/conversations/{conversation_id}")
async def conversation(conversation_id: str, agent: CurrentAgent, request: Request) -> dict[str, Any]:
    """The handoff package: transcript, profile, orders, history, intent and sentiment trace,
    reasons, summary, suggested replies and notes."""
    service = _service(request)
    handoff = await _visible(service, agent, conversation_id)
    found = await service.store.get_conversation(conversation_id)
    if found is None:
        raise not_found("no conversation has this id")
    return await service.packages.build(found, handoff_view(handoff))


@router.get("/conversations/{conversation_id}/suggestions")
async def suggestions(conversation_id: str, agent: CurrentAgent, request: Request) -> dict[str, Any]:
    """Three suggested replies for the customer's latest message."""
    service = _service(request)
    handoff = await _visible(service, agent, conversation_id)
    return {"suggestions": await service.packages.suggestions(conversation_id, list(handoff.reasons))}


class AgentMessage(BaseModel):
    """What the agent writes to the customer."""

    text: str = Field(description="the message (1-4000 characters)")
    client_message_id: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="the desk's id of this message: a retry with the same id is stored once",
    )


@router.post("/conversations/{conversation_id}/messages")
async def send(
    conversation_id: str, body: AgentMessage, agent: CurrentAgent, request: Request
) -> dict[str, Any]:
    """Send a message to the customer, through the channel they use."""
    text = body.text.strip()
    if not text:
        raise ApiError(400, "empty", "the message is empty")
    if len(text) > MAX_AGENT_MESSAGE_CHARS:
        raise ApiError(413, "too_long", f"a message has at most {MAX_AGENT_MESSAGE_CHARS} characters")
    service = _service(request)
    await _visible(service, agent, conversation_id)
    await _check_reachable(service, conversation_id)
    turn = await service.desk.send(conversation_id, agent, text, body.client_message_id)
    return {"turn": turn.to_dict()}


async def _check_reachable(service: Service, conversation_id: str) -> None:
    """Refuse (409) a message the customer's channel could not deliver now, rather than lose it."""
    conversation = await service.store.get_conversation(conversation_id)
    channel = service.channels.get(conversation.channel) if conversation else None
    if channel is not None and not await channel.reachable(conversation_id):
        raise ApiError(
            409,
            "unreachable",
            "the customer can no longer be reached on WeChat: they have not written for 48 hours, "
            "and WeChat allows no messages until they write again",
        )


class Note(BaseModel):
    """An internal note: agents see it, the customer never does."""

    text: str


@router.post("/conversations/{conversation_id}/notes")
async def add_note(conversation_id: str, body: Note, agent: CurrentAgent, request: Request) -> dict[str, Any]:
    """Add an internal note to a conversation the agent may see."""
    service = _service(request)
    await _visible(service, agent, conversation_id)
    note = await service.desk.add_note(conversation_id, agent, body.text)
    await service.queue.publish(events.Note(conversation_id, note))
    return {"note": note}


class Transfer(BaseModel):
    """Where a chat goes: another agent, or back to the queue of a skill."""

    agent_id: str | None = None
    skill: str | None = None


@router.post("/conversations/{conversation_id}/transfer")
async def transfer(
    conversation_id: str, body: Transfer, agent: CurrentAgent, request: Request
) -> dict[str, Any]:
    """Transfer the chat to another agent (online, with room) or to a skill's queue."""
    service = _service(request)
    if body.agent_id is not None and await service.agents.get(body.agent_id) is None:
        raise not_found("no agent has this id")
    moved = await service.desk.transfer(conversation_id, agent, to_agent=body.agent_id, to_skill=body.skill)
    return {"handoff": handoff_view(moved)}


@router.post("/conversations/{conversation_id}/resolve")
async def resolve(conversation_id: str, agent: CurrentAgent, request: Request) -> dict[str, Any]:
    """End the conversation; the customer is asked for a 1-5 rating."""
    resolved = await _service(request).desk.resolve(conversation_id, agent)
    return {"conversation": resolved.to_dict()}


@router.post("/conversations/{conversation_id}/handback")
async def hand_back(conversation_id: str, agent: CurrentAgent, request: Request) -> dict[str, Any]:
    """Give the conversation back to the bot."""
    back = await _service(request).desk.hand_back(conversation_id, agent)
    return {"conversation": back.to_dict()}


@router.post("/conversations/{conversation_id}/close")
async def close(conversation_id: str, agent: CurrentAgent, request: Request) -> dict[str, Any]:
    """Close a chat or left message that is still waiting (answered some other way)."""
    closed = await _service(request).desk.close_waiting(conversation_id, agent)
    return {"conversation": closed.to_dict()}


@router.get("/search")
async def search(
    agent: CurrentAgent,
    request: Request,
    q: Annotated[str, Query(max_length=500, description="what to look for")] = "",
    language: Annotated[str, Query(pattern="^(zh|en)$")] = "en",
) -> dict[str, Any]:
    """Knowledge search over FAQ answers and articles."""
    service = _service(request)
    return {"results": [s.to_dict() for s in service.suggester.search(q, language)]}


# -- live events ----------------------------------------------------------------------------


@router.websocket("/ws")
async def agent_socket(websocket: WebSocket, token: Annotated[str, Query()] = "") -> None:
    """The agent's live connection (frames in the module docstring)."""
    service: Service = websocket.app.state.service
    try:
        agent = await agent_from_token(service, token)
    except ApiError as exc:
        await websocket.close(code=4401, reason=exc.message[:120])
        return
    await websocket.accept()
    await AgentConnection(service, agent, websocket).run()


class AgentConnection:
    """One agent's WebSocket: forwards queue events, their chats' turns, and packages of new chats."""

    def __init__(self, service: Service, agent: Agent, websocket: WebSocket) -> None:
        self.service = service
        self.agent = agent
        self.websocket = websocket
        self.events: asyncio.Queue[Listened] = asyncio.Queue()
        self.following: set[str] = set()
        self._send_lock = asyncio.Lock()

    async def run(self) -> None:
        """Serve the connection until the agent closes it."""
        hub = self.service.hub
        hub.listen_handoffs(self.events)
        pump = asyncio.create_task(self._pump())
        try:
            mine = await self.service.queue.assigned_to(self.agent.id)
            for handoff in mine:
                self._follow(handoff.conversation_id)
            skills = None if self.agent.role == "supervisor" else set(self.agent.skills)
            waiting = [h for h in await self.service.queue.waiting(skills) if can_see(self.agent, h)]
            await self.send(
                {
                    "type": "hello",
                    "agent": await _agent_view(self.service, self.agent),
                    "chats": [handoff_view(h) for h in mine],
                    "queue": [handoff_view(h) for h in waiting],
                }
            )
            while True:
                frame = json.loads(await self.websocket.receive_text())
                if isinstance(frame, dict) and frame.get("type") == "ping":
                    await self.send({"type": "pong"})
        except (WebSocketDisconnect, json.JSONDecodeError):
            pass
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            hub.forget_handoffs(self.events)
            for conversation_id in self.following:
                hub.forget(self.events, conversation_id=conversation_id)

    def _follow(self, conversation_id: str) -> None:
        if conversation_id not in self.following:
            self.following.add(conversation_id)
            self.service.hub.listen(self.events, conversation_id=conversation_id)

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one JSON frame."""
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(frame, ensure_ascii=False))

    async def _pump(self) -> None:
        while True:
            event = await self.events.get()
            try:
                await self._forward(event)
            except (WebSocketDisconnect, RuntimeError):
                return
            except Exception:  # one bad event must not end the agent's connection
                log.exception("agent %s: could not forward %s", self.agent.id, type(event).__name__)

    async def _forward(self, event: Listened) -> None:
        match event:
            case TurnStored(conversation_id=conversation_id) if conversation_id in self.following:
                await self.send(
                    {"type": "turn", "conversation_id": conversation_id, "turn": json.loads(event.record)}
                )
            case StateChanged(conversation_id=conversation_id) if conversation_id in self.following:
                await self.send(
                    {"type": "state", "conversation_id": conversation_id, "state": event.to_state.value}
                )
                if event.to_state != State.ASSIGNED:
                    self.following.discard(conversation_id)
                    self.service.hub.forget(self.events, conversation_id=conversation_id)
            case Understood() | events.Note():
                if event.conversation_id in self.following or self.agent.role == "supervisor":
                    await self.send(event.payload)
            case HandoffChanged():
                await self._forward_handoff(event)
            case AgentPresence() if self.agent.role == "supervisor":
                kind = "agent_online" if event.online else "agent_offline"
                await self.send({"type": "agents", "event": kind, "agent_id": event.agent_id})

    async def _forward_handoff(self, event: HandoffChanged) -> None:
        handoff, kind = event.handoff, event.kind
        if event.from_agent_id == self.agent.id and handoff.agent_id != self.agent.id:
            self.following.discard(handoff.conversation_id)  # transferred away from this agent
            self.service.hub.forget(self.events, conversation_id=handoff.conversation_id)
        mine = handoff.status == "assigned" and handoff.agent_id == self.agent.id
        if kind in ("assigned", "transferred") and mine and handoff.conversation_id not in self.following:
            self._follow(handoff.conversation_id)
            conversation = await self.service.store.get_conversation(handoff.conversation_id)
            package = (
                await self.service.packages.build(conversation, handoff_view(handoff))
                if conversation
                else None
            )
            await self.send({"type": "assigned", "handoff": handoff_view(handoff), "package": package})
        elif can_see(self.agent, handoff) or (kind == "assigned" and self.agent.role == "supervisor"):
            await self.send({"type": "queue", "event": kind, "handoff": handoff_view(handoff)})
