"""The web channel: visitor tokens, the chat WebSocket and the chat page.

A visitor is anonymous until it links a verified phone or member id: its identity is a
random visitor id, carried in a token Baton signs (`api.auth`), kept by the page in
localStorage. The token is the only way to a visitor's conversation.

The WebSocket protocol (JSON text frames) is described in the README ("The web chat
WebSocket"); in short, the page sends ``message`` and ``ping`` frames, and receives ``hello``,
``turn``, ``ack``, ``typing``, ``state``, ``error`` and ``pong``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.websockets import WebSocketDisconnected

from api.auth import TokenError, make_token, verify_token
from api.channels.base import InboundMessage, public_turn
from api.channels.follower import ConversationFollower, Item, StateChange
from api.errors import ApiError
from api.pipeline import Accepted
from api.service import Service
from conversations.model import Turn

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent.parent / "static" / "web"
CLOSE_BAD_TOKEN = 4401  # the page drops its token and asks for a new one
MAX_FRAME_CHARS = 64 * 1024  # a frame larger than any acceptable message plus its envelope

router = APIRouter()


class SessionRequest(BaseModel):
    """``POST /api/v1/web/session``: an earlier token to keep the same visitor, if the page has one."""

    token: str | None = None


class SessionResponse(BaseModel):
    """A visitor id and its signed token."""

    visitor_id: str
    token: str
    expires_in: int


@router.get("/", include_in_schema=False)
async def chat_page() -> FileResponse:
    """The customer chat page."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.post("/api/v1/web/session", tags=["web"])
async def web_session(body: SessionRequest, request: Request) -> SessionResponse:
    """A token for a web visitor: the same visitor again if ``token`` is still valid, else a new one."""
    service: Service = request.app.state.service
    visitor_id = None
    if body.token:
        try:
            visitor_id = verify_token(service.web_secret, "web", body.token)
        except TokenError:
            visitor_id = None
    visitor_id = visitor_id or uuid.uuid4().hex
    ttl = int(service.settings.visitor_token_days * 86400)
    token = make_token(service.web_secret, "web", visitor_id, ttl)
    return SessionResponse(visitor_id=visitor_id, token=token, expires_in=ttl)


@router.websocket("/ws/web")
async def web_socket(websocket: WebSocket, token: str = "", conversation: str = "", after: int = 0) -> None:
    """The chat widget's connection: see the module docstring and the README."""
    service: Service = websocket.app.state.service
    await websocket.accept()
    try:
        visitor_id = verify_token(service.web_secret, "web", token)
    except TokenError as exc:
        await websocket.close(code=CLOSE_BAD_TOKEN, reason=str(exc)[:120])
        return
    session = WebSession(websocket, service, visitor_id)
    try:
        await session.run(conversation, max(after, 0))
    except (WebSocketDisconnect, WebSocketDisconnected):  # the page went away, maybe mid-send
        pass
    finally:
        await session.close()


class WebSession:
    """One open WebSocket of a visitor."""

    def __init__(self, websocket: WebSocket, service: Service, visitor_id: str) -> None:
        self.websocket = websocket
        self.service = service
        self.visitor_id = visitor_id
        self.follower: ConversationFollower | None = None
        self._send_lock = asyncio.Lock()
        self._answers: set[asyncio.Task[None]] = set()  # bot answers still being worked out
        self._thinking = 0

    async def run(self, known_conversation: str, after: int) -> None:
        """Say hello, replay what the page missed, then serve frames until the page goes away."""
        store = self.service.store
        customer = await store.resolve_customer("web", self.visitor_id)
        self.follower = ConversationFollower(store, self.service.hub, customer.id, self._deliver)
        latest = await store.latest_conversation(customer.id)
        await self.send(
            {
                "type": "hello",
                "conversation_id": latest.id if latest else None,
                "state": latest.state.value if latest else None,
            }
        )
        if latest is not None:
            await self.follower.follow(latest.id, after if latest.id == known_conversation else 0)
        self.follower.start()
        while True:
            text = await self.websocket.receive_text()
            await self.on_frame(text)

    async def on_frame(self, text: str) -> None:
        """Handle one frame from the page; a bad one gets an error frame, never a dropped connection."""
        client_message_id = None
        try:
            if len(text) > MAX_FRAME_CHARS:
                raise ApiError(413, "too_long", "the frame is too large")
            try:
                frame = json.loads(text)
            except ValueError:
                raise ApiError(400, "invalid_json", "the frame is not valid JSON") from None
            if not isinstance(frame, dict):
                raise ApiError(400, "bad_frame", 'a frame is a JSON object with a "type"')
            client_message_id = _client_message_id(frame.get("client_message_id"))
            kind = frame.get("type")
            if kind == "ping":
                await self.send({"type": "pong"})
            elif kind == "message":
                await self.on_message(self.service.channels["web"].normalise(self.visitor_id, frame))
            else:
                raise ApiError(400, "bad_frame", f"unknown frame type {kind!r}: expected message or ping")
        except ApiError as error:
            await self._send_error(error, client_message_id)
        except (WebSocketDisconnect, WebSocketDisconnected, asyncio.CancelledError):
            raise
        except Exception:  # Redis down, a bug: the page retries with the same id, nothing is stored twice
            log.exception("could not handle a frame of visitor %s", self.visitor_id)
            unavailable = ApiError(
                503, "unavailable", "the service could not take the message; try again shortly"
            )
            await self._send_error(unavailable, client_message_id)

    async def _send_error(self, error: ApiError, client_message_id: str | None) -> None:
        body: dict[str, Any] = {"type": "error", **error.to_dict(), "status": error.status}
        if client_message_id:
            body["client_message_id"] = client_message_id
        await self.send(body)

    async def on_message(self, message: InboundMessage) -> None:
        """Store the customer's message and acknowledge it, then let the bot answer in the background.

        The answer runs in a task of its own so that the next message is stored and
        acknowledged at once even while the bot is still thinking about this one; the
        pipeline answers one conversation's messages in order.
        """
        assert self.follower is not None
        accepted = await self.service.pipeline.accept(message)
        # Handling starts before anything is said to the page, which may be gone already.
        handling = self.service.pipeline.reply_soon(accepted) if accepted.pending else None
        await self.send(
            {
                "type": "ack",
                "client_message_id": message.client_message_id,
                "conversation_id": accepted.conversation.id,
                "seq": accepted.turn.seq,
                "duplicate": accepted.duplicate,
            }
        )
        if accepted.conversation.id != self.follower.conversation_id:
            await self.follower.follow(accepted.conversation.id)  # a new conversation began
        await self.follower.offer(accepted.turn)
        if handling is not None:  # the bot's answer, a rating's thanks, or NLU for the agent
            task = asyncio.create_task(self._answer(accepted, handling))
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)

    async def _answer(self, accepted: Accepted, handling: asyncio.Task[list[Turn]]) -> None:
        """Show the bot's turns for one message, with the typing indicator on while any answer is pending.

        The handling itself goes on if the page has gone: the reply is stored, and the page gets
        it on reconnect.
        """
        assert self.follower is not None
        typing = accepted.bot_answers  # only the bot types; an agent's replies come when they come
        self._thinking += int(typing)
        try:
            if typing and self._thinking == 1:
                await self.send({"type": "typing", "on": True})
            for turn in await asyncio.shield(handling):
                await self.follower.offer(turn)
        except Exception:  # a closed socket, Redis gone: the customer's message is stored either way
            log.warning("no answer delivered for turn %s", accepted.turn.id, exc_info=True)
        finally:
            self._thinking -= int(typing)
            if typing and self._thinking == 0:
                with contextlib.suppress(Exception):
                    await self.send({"type": "typing", "on": False})

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one JSON frame (frames from the follower and the handler never interleave)."""
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(frame, ensure_ascii=False))

    async def close(self) -> None:
        """Stop following the conversation."""
        if self.follower is not None:
            await self.follower.close()

    async def _deliver(self, item: Item) -> None:
        if isinstance(item, StateChange):
            await self.send({"type": "state", "conversation_id": item.conversation_id, "state": item.state})
        else:
            await self.send({"type": "turn", "turn": public_turn(item)})


def _client_message_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 100:
        raise ApiError(400, "bad_frame", "client_message_id must be a string of 1-100 characters")
    return value


class WebChannel:
    """The web channel as a `ChannelAdapter`: turns reach visitors through their open WebSockets."""

    name = "web"

    def __init__(self, service: Service) -> None:
        self.service = service

    def normalise(self, external_id: str, payload: Any) -> InboundMessage:
        """A ``message`` frame's text and id as an `InboundMessage` (400/413 if the text is not acceptable)."""
        if not isinstance(payload, dict):
            raise ApiError(400, "bad_frame", 'a frame is a JSON object with a "type"')
        text = self.service.pipeline.check_text(payload.get("text"))
        return InboundMessage("web", external_id, text, _client_message_id(payload.get("client_message_id")))

    async def reachable(self, conversation_id: str) -> bool:
        """Always: the customer's client fetches what it missed when it comes back."""
        return True
