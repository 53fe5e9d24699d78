"""The WeChat Official Account channel: the callback URL ``/channels/wechat`` and its adapter.

A company points its account's server settings at ``/channels/wechat`` with the Token (and, in
safe mode, the EncodingAESKey) also given to Baton (``BATON_WECHAT_*``). Then:

- ``GET`` is WeChat checking the URL: the signature over (token, timestamp, nonce) must match,
  and the answer is ``echostr``.
- ``POST`` carries a follower's message or event as XML, encrypted in safe mode
  (``encrypt_type=aes``, ``msg_signature``). Requests with a wrong or missing signature, or a
  timestamp more than 5 minutes off, are refused (403) and nothing is processed; XML with a
  DTD or entities, bodies over 64 KB, and encrypted bodies that do not decrypt or carry another
  AppID are refused too (400/403), each logged.
- A text (or a voice message with WeChat's speech recognition) goes through the turn pipeline
  like any channel's message. WeChat waits 5 seconds for the answer: if the bot's reply is
  ready within ``BATON_WECHAT_REPLY_SECONDS`` (4 s) it goes back in the HTTP response (the
  passive reply, encrypted when the request was); otherwise the answer is ``success`` and the
  reply follows through the customer-service message API (`api.channels.wechat_outbox`), as do
  agents' messages and queue notices. WeChat retries a slow callback three times; a message
  is handled once (by ``MsgId``; events by follower and ``CreateTime``).
- Images, locations, links and other media get a polite "please type your question"; the
  ``subscribe`` event a greeting; anything else ``success``.

The follower's openid is their identity on the ``wechat`` channel; the company backend's link
API joins it with the same person's web and app identities by a verified phone number, and a
``UnionId``, when WeChat sends one, links it too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import PlainTextResponse, Response

from api.channels import wechat_texts
from api.channels.base import InboundMessage
from api.channels.wechat_api import WeChatApi
from api.channels.wechat_crypto import MessageCipher, SafeMode, WeChatCryptoError, signature_matches
from api.channels.wechat_outbox import NOTE_AUTHOR, WeChatOutbox
from api.channels.wechat_state import WeChatState
from api.channels.wechat_xml import WeChatXmlError, parse, text_reply
from api.errors import ApiError, forbidden, not_found
from api.pipeline import Accepted
from api.service import Service
from api.settings import Settings
from bot.nlu.language import detect_language
from handoff.events import Note

log = logging.getLogger(__name__)
router = APIRouter(tags=["wechat"])

MAX_CLOCK_SKEW_SECONDS = 300  # WeChat's requests older (or newer) than this are replays
SUCCESS = "success"  # WeChat's "received, nothing to say now"
AfterReply = Callable[[], Awaitable[None]]


@dataclass
class Callback:
    """One callback request: when its passive reply must be ready by, what runs after it is sent."""

    deadline: float  # time.monotonic()
    after: list[AfterReply] = field(default_factory=list)


MEDIA_TYPES = frozenset({"image", "location", "link", "video", "shortvideo", "file", "voice"})


@dataclass(frozen=True)
class WeChatConfig:
    """The account's settings; `from_settings` gives None while the channel is off."""

    token: str
    app_id: str
    app_secret: str
    safe_mode: SafeMode | None
    api_base: str
    reply_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> WeChatConfig | None:
        """The channel's settings, or None when ``BATON_WECHAT_TOKEN`` is not set.

        Raises:
            ValueError: the token is set but the AppID is missing, or the EncodingAESKey is malformed.
        """
        if settings.wechat_token is None:
            return None
        token = settings.wechat_token.get_secret_value()
        app_id = settings.wechat_app_id or ""
        if not token or not app_id:
            raise ValueError("the WeChat channel needs BATON_WECHAT_TOKEN and BATON_WECHAT_APP_ID")
        safe_mode = None
        if settings.wechat_aes_key is not None:
            previous = settings.wechat_previous_aes_key
            safe_mode = SafeMode(
                token,
                app_id,
                settings.wechat_aes_key.get_secret_value(),
                previous.get_secret_value() if previous else None,
            )
        secret = settings.wechat_app_secret.get_secret_value() if settings.wechat_app_secret else ""
        return cls(token, app_id, secret, safe_mode, settings.wechat_api_base, settings.wechat_reply_seconds)


class WeChatChannel:
    """The WeChat channel as a `ChannelAdapter`, with the outbox that pushes replies."""

    name = "wechat"

    def __init__(self, service: Service, config: WeChatConfig) -> None:
        self.service = service
        self.config = config
        prefix = service.settings.redis_prefix
        self.state = WeChatState(service.redis, prefix)
        self.api = WeChatApi(
            service.redis, config.app_id, config.app_secret, api_base=config.api_base, prefix=prefix
        )
        self.outbox = WeChatOutbox(
            self.api,
            self.state,
            self._note,
            service.store,
            service.pipeline.inbox.consumer,
            config.reply_seconds,
            int(service.settings.reclaim_seconds * 1000),
        )

    async def start(self) -> None:
        """Start the outbox."""
        self.outbox.start()

    async def stop(self) -> None:
        """Stop the outbox and close the API client."""
        await self.outbox.stop()
        await self.api.aclose()

    def normalise(self, external_id: str, payload: Any) -> InboundMessage:
        """A parsed WeChat message (its XML fields) as an `InboundMessage`.

        Raises:
            ApiError: 400 when the message has no text Baton can read.
        """
        fields: dict[str, str] = payload
        text = readable_text(fields)
        if text is None:
            raise ApiError(400, "not_text", f"a WeChat {fields.get('MsgType')} message has no text")
        return InboundMessage("wechat", external_id, text, fields.get("MsgId") or None)

    async def reachable(self, conversation_id: str) -> bool:
        """False when the conversation's follower is outside WeChat's 48-hour window."""
        openid = await self.state.openid_of(conversation_id)
        return openid is not None and await self.state.reachable(openid)

    async def _note(self, conversation_id: str, text: str) -> None:
        note = await self.service.desk.records.add_note(conversation_id, NOTE_AUTHOR, text)
        await self.service.queue.publish(Note(conversation_id, note))

    # -- one callback ----------------------------------------------------------------------------

    async def handle(self, fields: dict[str, str], call: Callback) -> str | None:
        """Handle one message or event; returns the passive reply's text, or None (``success``).

        ``call`` carries the callback's deadline for a passive reply, and collects what must wait
        until the reply has left (letting the outbox send what follows it); the route runs that
        once the response is sent.
        """
        openid = fields.get("FromUserName", "")
        if not openid:
            raise ApiError(400, "not_a_message", "the message has no FromUserName")
        kind = fields.get("MsgType", "")
        # A message with text goes into the store, which takes a retry of it once (by MsgId) and
        # hands it over again if it is not handled yet: marking it seen here first would make a
        # crash between the mark and the store lose it. Events and media are answered here only.
        stored = kind != "event" and readable_text(fields) is not None
        key = fields.get("MsgId") or f"{openid}:{fields.get('CreateTime', '')}:{fields.get('Event', '')}"
        if not stored and not await self.state.first_sight(key):
            return None  # WeChat retrying an event or a media message answered already
        try:
            return await self._handle_once(openid, kind, fields, call)
        except Exception:
            if not stored:
                await self.state.forget_message(key)  # not answered: WeChat's retry gets another go
            raise

    async def _handle_once(
        self, openid: str, kind: str, fields: dict[str, str], call: Callback
    ) -> str | None:
        await self.state.touch(openid)
        if union_id := fields.get("UnionId"):
            customer = await self.service.store.resolve_customer("wechat", openid)
            await self.service.store.link(customer.id, "wechat_unionid", union_id)
        if kind == "event":
            if fields.get("Event", "").lower() == "subscribe":
                return wechat_texts.text("greeting", await self._language(openid))
            return None
        text = readable_text(fields)
        if text is None:
            if kind in MEDIA_TYPES:
                return wechat_texts.text("type_please", await self._language(openid))
            log.info("wechat: ignored a %r message", kind)
            return None
        return await self._converse(openid, text, fields.get("MsgId") or None, call)

    async def _converse(self, openid: str, text: str, message_id: str | None, call: Callback) -> str | None:
        text = await self._answer_by_number(openid, text)
        try:
            accepted = await self.service.pipeline.accept(InboundMessage("wechat", openid, text, message_id))
        except ApiError as exc:
            if exc.code in ("rate_limited", "too_long"):
                return wechat_texts.text(exc.code, detect_language(text, default="zh").language)
            if exc.code == "empty":
                return None
            raise
        await self.state.touch(openid, accepted.conversation.id)
        if not accepted.pending:  # a retry of a message handled already
            return None
        return await self._reply_in_time(openid, accepted, call)

    async def _reply_in_time(self, openid: str, accepted: Accepted, call: Callback) -> str | None:
        """The bot's first reply if it is ready within the budget and not sent otherwise yet."""
        conversation_id, seq = accepted.conversation.id, accepted.turn.seq
        await self.state.open_passive(conversation_id, seq, self.config.reply_seconds + 1)
        window = self.outbox.passive.setdefault(conversation_id, asyncio.Event())
        replying = self.service.pipeline.reply_soon(accepted)
        passive = None
        try:
            done, _ = await asyncio.wait({replying}, timeout=max(0.0, call.deadline - time.monotonic()))
            turns = replying.result() if done and replying.exception() is None else []
            if turns and await self.state.claim(turns[0].id, "passive"):
                await self.state.offer(openid, wechat_texts.payloads(turns[0]))
                passive = wechat_texts.render(turns[0])
            return passive  # None: the outbox sends the reply when it comes
        finally:
            # After a passive reply, the turns that follow it wait until it has left.
            if passive is None:
                await self._close_passive(conversation_id, seq, window)
            else:
                call.after.append(lambda: self._close_passive(conversation_id, seq, window))

    async def _close_passive(self, conversation_id: str, seq: int, window: asyncio.Event) -> None:
        """The callback for ``seq`` is done: let the outbox go on with the conversation's turns."""
        if self.outbox.passive.get(conversation_id) is window:
            del self.outbox.passive[conversation_id]
        window.set()
        await self.state.close_passive(conversation_id, seq)

    async def _answer_by_number(self, openid: str, text: str) -> str:
        """ "2" after numbered quick replies means the second one: its payload."""
        choice = text.strip()
        if not choice.isdigit() or len(choice) > 2:
            return text
        offered = await self.state.offered(openid)
        number = int(choice)
        if 1 <= number <= len(offered):
            await self.state.offer(openid, [])
            return offered[number - 1]
        return text

    async def _language(self, openid: str) -> str:
        """The follower's language: their latest conversation's, else Chinese (WeChat's default)."""
        customer = await self.service.store.resolve_customer("wechat", openid)
        latest = await self.service.store.latest_conversation(customer.id)
        return latest.language if latest is not None and latest.language else "zh"


def readable_text(fields: dict[str, str]) -> str | None:
    """The message's text: a text message's content, a voice message's speech recognition."""
    kind = fields.get("MsgType")
    if kind == "text":
        return fields.get("Content") or None
    if kind == "voice":
        return (fields.get("Recognition") or "").strip() or None
    return None


# -- the callback URL ----------------------------------------------------------------------------


def _channel(request: Request) -> WeChatChannel:
    channel = request.app.state.service.channels.get("wechat")
    if channel is None:
        raise not_found("the WeChat channel is off: set BATON_WECHAT_TOKEN and BATON_WECHAT_APP_ID")
    return channel


def _check_request(config: WeChatConfig, signature: str | None, timestamp: str, nonce: str) -> None:
    """Refuse (403) a request WeChat did not sign, or one too old to be anything but a replay."""
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        log.warning("wechat: refused a request with timestamp %r (stale or malformed)", timestamp[:20])
        raise forbidden("the request's timestamp is missing or more than 5 minutes off")
    if not signature_matches(signature, config.token, timestamp, nonce):
        log.warning("wechat: refused a request with a wrong or missing signature")
        raise forbidden("wrong or missing signature")


@router.get("/channels/wechat", include_in_schema=False)
async def verify(
    request: Request,
    signature: Annotated[str | None, Query()] = None,
    timestamp: Annotated[str, Query()] = "",
    nonce: Annotated[str, Query()] = "",
    echostr: Annotated[str, Query()] = "",
) -> PlainTextResponse:
    """WeChat checking the URL: echo ``echostr`` when the signature matches."""
    channel = _channel(request)
    _check_request(channel.config, signature, timestamp, nonce)
    return PlainTextResponse(echostr)


@router.post("/channels/wechat", include_in_schema=False)
async def receive(
    request: Request,
    background: BackgroundTasks,
    signature: Annotated[str | None, Query()] = None,
    timestamp: Annotated[str, Query()] = "",
    nonce: Annotated[str, Query()] = "",
    encrypt_type: Annotated[str | None, Query()] = None,
    msg_signature: Annotated[str | None, Query()] = None,
) -> Response:
    """A follower's message or event; answers the passive reply or ``success``."""
    channel = _channel(request)
    config = channel.config
    _check_request(config, signature, timestamp, nonce)
    call = Callback(deadline=_passive_deadline(config, timestamp))
    try:
        fields = parse(await request.body())
        cipher: MessageCipher | None = None
        if encrypt_type == "aes":
            fields, cipher = _decrypt(config, fields, msg_signature, timestamp, nonce)
    except WeChatXmlError as exc:
        log.warning("wechat: refused a body (%s): %s", exc.code, exc)
        raise ApiError(400, exc.code, str(exc)) from exc
    reply = await channel.handle(fields, call)
    for action in call.after:
        background.add_task(action)  # run once the response has been sent
    if reply is None:
        return PlainTextResponse(SUCCESS)
    xml = text_reply(fields.get("FromUserName", ""), fields.get("ToUserName", ""), reply, int(time.time()))
    if cipher is not None and config.safe_mode is not None:
        xml = config.safe_mode.reply(xml, cipher, str(int(time.time())), nonce)
    return Response(xml, media_type="application/xml")


def _passive_deadline(config: WeChatConfig, timestamp: str) -> float:
    """When the passive reply must be ready (``time.monotonic()``).

    The budget counts from here, not from when the bot starts: checking, parsing and storing the
    message use WeChat's 5 seconds too. And time the request spent queued before this handler
    (a busy service) counts as well: WeChat stamped the request with its send time, in whole
    seconds, so a request that waited too long skips the passive reply and its answer goes out
    through the customer-service API, rather than back to a WeChat that has stopped waiting.
    """
    budget = config.reply_seconds
    # `_check_request` accepted the timestamp: digits, within 5 minutes of this clock.
    left_by_wechat = int(timestamp) + budget + 0.5 - time.time()
    return time.monotonic() + min(budget, left_by_wechat)


def _decrypt(
    config: WeChatConfig, envelope: dict[str, str], msg_signature: str | None, timestamp: str, nonce: str
) -> tuple[dict[str, str], MessageCipher]:
    """The fields of a safe-mode message, and the key that opened it (the reply uses it too)."""
    if config.safe_mode is None:
        raise ApiError(400, "safe_mode_off", "an encrypted message, but BATON_WECHAT_AES_KEY is not set")
    encrypted = envelope.get("Encrypt", "")
    if not encrypted or not config.safe_mode.check(msg_signature or "", timestamp, nonce, encrypted):
        log.warning("wechat: refused an encrypted body with a wrong or missing msg_signature")
        raise forbidden("wrong or missing msg_signature")
    try:
        plaintext, cipher = config.safe_mode.decrypt(encrypted)
    except WeChatCryptoError as exc:
        log.warning("wechat: refused an encrypted body (%s)", exc.code)
        status = 403 if exc.code == "wrong_app_id" else 400
        raise ApiError(status, exc.code, f"the encrypted message was refused: {exc.code}") from exc
    return parse(plaintext.encode("utf-8")), cipher
