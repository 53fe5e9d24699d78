"""The mobile-app channel: a REST API and a server-sent event stream.

Every request carries the app's key (``X-Baton-App-Key``) and the user's identity token
(``Authorization: Bearer <token>``), which the app's backend signs with the app secret for
its logged-in user (`api.auth`). The token is the user: a user reaches only their own
conversations, and a conversation id of someone else's answers 403.

Cursors are opaque to the app: pass back the ``cursor`` of the last answer to get what
came after it. A cursor follows the user into their next conversation when one starts.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.auth import TokenError, verify_token
from api.channels.base import InboundMessage, public_turn
from api.channels.follower import ConversationFollower, Item, StateChange
from api.errors import ApiError, forbidden, not_found, unauthorized
from api.service import Service
from conversations.model import Conversation, Customer

router = APIRouter(prefix="/api/v1/app", tags=["app"])

HEARTBEAT_SECONDS = 15.0  # keeps proxies from closing an idle stream


class SendRequest(BaseModel):
    """A message from the app user."""

    text: str = Field(description="what the user wrote (1-4000 characters)")
    client_message_id: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="the app's id for this message; a retry is stored once",
    )


def check_app_key(service: Service, app_key: str | None, api: str) -> bytes:
    """The app secret, once ``app_key`` is the app's key.

    Raises:
        ApiError: 503 when the app API is off (no key or secret set), 401 for a missing or wrong key.
    """
    secret = service.app_secret
    if secret is None:
        raise ApiError(503, "app_disabled", f"the {api} is off: set BATON_APP_KEY and BATON_APP_SECRET")
    expected = (service.settings.app_key or "").encode()
    if not app_key or not hmac.compare_digest(app_key.encode(), expected):
        raise unauthorized("missing or unknown app key (X-Baton-App-Key)")
    return secret


def bearer(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header, or None."""
    scheme, _, credential = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip() or None


@dataclass(frozen=True)
class AppUser:
    """The app's user id (the token's subject) and the Baton customer it belongs to."""

    user_id: str
    customer: Customer

    @property
    def id(self) -> str:
        """The customer id."""
        return self.customer.id


async def app_user(
    request: Request,
    x_baton_app_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> AppUser:
    """The user behind the request's app key and user token (401 if either is wrong)."""
    service: Service = request.app.state.service
    secret = check_app_key(service, x_baton_app_key, "app API")
    token = bearer(authorization)
    if not token:
        raise unauthorized("missing user token: send Authorization: Bearer <token>")
    try:
        user_id = verify_token(secret, "app", token)
    except TokenError as exc:
        raise unauthorized(f"bad user token: {exc}") from None
    return AppUser(user_id, await service.store.resolve_customer("app", user_id))


User = Annotated[AppUser, Depends(app_user)]


def _service(request: Request) -> Service:
    return request.app.state.service


@router.post("/messages")
async def send_message(body: SendRequest, user: User, request: Request) -> dict[str, Any]:
    """Send the user's message; the answer holds the stored message and the bot's replies.

    A repeated ``client_message_id`` returns the original message with ``duplicate: true``
    and no new replies (fetch them with GET /messages); a repeat of a message the service had
    not handled yet (it died meanwhile) is handled now, and its replies come with it.
    """
    service = _service(request)
    accepted = await service.pipeline.accept(service.channels["app"].normalise(user.user_id, body))
    # A client that hangs up must not cut the handling short: it runs in a task of its own.
    replies = await asyncio.shield(service.pipeline.reply_soon(accepted))
    conversation = await service.store.get_conversation(accepted.conversation.id) or accepted.conversation
    last = replies[-1].seq if replies else accepted.turn.seq
    return {
        "conversation": _conversation(conversation),
        "message": public_turn(accepted.turn),
        "replies": [public_turn(t) for t in replies],
        "duplicate": accepted.duplicate,
        "cursor": _cursor(conversation.id, last),
    }


@router.get("/messages")
async def fetch_messages(
    user: User,
    request: Request,
    cursor: Annotated[
        str | None, Query(description="from the previous answer; empty: from the start")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    """Messages after ``cursor`` in the user's conversation (and into the next one when it starts)."""
    service = _service(request)
    conversation, after = await _read_cursor(service, user, cursor)
    if conversation is None:
        return {"conversation": None, "messages": [], "cursor": cursor or ""}
    turns = await service.store.turns(conversation.id, after_seq=after, limit=limit)
    if not turns:
        latest = await service.store.latest_conversation(user.id)
        if latest is not None and latest.id != conversation.id:
            conversation, turns = latest, await service.store.turns(latest.id, limit=limit)
    last = turns[-1].seq if turns else (after if cursor else 0)
    return {
        "conversation": _conversation(conversation),
        "messages": [public_turn(t) for t in turns],
        "cursor": _cursor(conversation.id, last),
    }


@router.get("/conversations/{conversation_id}")
async def get_conversation(conversation_id: str, user: User, request: Request) -> dict[str, Any]:
    """One of the user's conversations with its first 100 messages (403 if it is not theirs)."""
    service = _service(request)
    conversation = await _owned(service, user, conversation_id)
    turns = await service.store.turns(conversation.id, limit=100)
    return {"conversation": _conversation(conversation), "messages": [public_turn(t) for t in turns]}


@router.get("/stream")
async def stream(
    user: User,
    request: Request,
    cursor: Annotated[str | None, Query(description="start after this cursor; empty: from the start")] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events: ``turn`` for each message after the cursor, ``state`` for state changes.

    Each ``turn`` event's id is a cursor, so a reconnecting EventSource resumes where it was
    (Last-Event-ID). A comment line every 15 s keeps the connection open.
    """
    service = _service(request)
    conversation, after = await _read_cursor(service, user, last_event_id or cursor)
    queue: asyncio.Queue[Item] = asyncio.Queue()
    follower = ConversationFollower(service.store, service.hub, user.id, _put(queue))
    if conversation is not None:
        await follower.follow(conversation.id, after)
    follower.start()
    return StreamingResponse(
        _events(request, follower, queue),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def _events(
    request: Request, follower: ConversationFollower, queue: asyncio.Queue[Item]
) -> AsyncIterator[str]:
    try:
        while not await request.is_disconnected():
            try:
                item = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if isinstance(item, StateChange):
                data = {"conversation_id": item.conversation_id, "state": item.state}
                yield f"event: state\ndata: {json.dumps(data)}\n\n"
            else:
                data = json.dumps(public_turn(item), ensure_ascii=False)
                yield f"event: turn\nid: {_cursor(item.conversation_id, item.seq)}\ndata: {data}\n\n"
    finally:
        await follower.close()


def _put(queue: asyncio.Queue[Item]):
    async def put(item: Item) -> None:
        queue.put_nowait(item)

    return put


async def _owned(service: Service, user: AppUser, conversation_id: str) -> Conversation:
    conversation = await service.store.get_conversation(conversation_id)
    if conversation is None:
        raise not_found(f"no conversation {conversation_id}")
    owner = await service.store.get_customer(conversation.customer_id)
    if owner is None or owner.id != user.id:
        raise forbidden("this conversation belongs to another customer")
    return conversation


async def _read_cursor(
    service: Service, user: AppUser, cursor: str | None
) -> tuple[Conversation | None, int]:
    """The conversation and seq a cursor points at; no cursor: the user's latest conversation, seq 0."""
    if not cursor:
        return await service.store.latest_conversation(user.id), 0
    conversation_id, _, seq = cursor.rpartition(":")
    if not conversation_id or not seq.isdigit():
        raise ApiError(400, "bad_cursor", "the cursor is not one this API gave out")
    return await _owned(service, user, conversation_id), int(seq)


def _cursor(conversation_id: str, seq: int) -> str:
    return f"{conversation_id}:{seq}"


def _conversation(conversation: Conversation) -> dict[str, Any]:
    return {"id": conversation.id, "state": conversation.state.value, "channel": conversation.channel}


class AppChannel:
    """The app channel as a `ChannelAdapter`: the app fetches turns or follows the stream."""

    name = "app"

    def normalise(self, external_id: str, payload: Any) -> InboundMessage:
        """A `SendRequest` body as an `InboundMessage`."""
        body = payload if isinstance(payload, SendRequest) else SendRequest.model_validate(payload)
        return InboundMessage("app", external_id, body.text, body.client_message_id)

    async def reachable(self, conversation_id: str) -> bool:
        """Always: the customer's client fetches what it missed when it comes back."""
        return True
