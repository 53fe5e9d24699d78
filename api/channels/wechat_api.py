"""WeChat's customer-service message API: what the bot and agents say after the 5-second passive reply.

Two endpoints of the Official Account API are used:

- ``GET {base}/cgi-bin/token?grant_type=client_credential&appid=..&secret=..`` returns
  ``{"access_token": .., "expires_in": 7200}``. Every fetch starts a new token (the previous one
  stays valid for a few minutes only), so the token lives in Redis, shared by every replica, and
  only one of them fetches it at a time.
- ``POST {base}/cgi-bin/message/custom/send?access_token=..`` with
  ``{"touser": openid, "msgtype": "text", "text": {"content": ..}}``; WeChat answers
  ``{"errcode": 0, "errmsg": "ok"}`` or another errcode (45015: the follower has not written for
  48 hours; 45047: too many messages since they last wrote; 40001/40014/42001: the token).

A text reply may be at most 2048 bytes of UTF-8 (WeChat's documented limit for text replies,
errcode 45002 beyond it); longer texts go out as several messages, split at paragraph, line or
sentence boundaries (`split_text`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

import httpx
from redis.asyncio import Redis

from api.logs import hide_credentials, redact

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.weixin.qq.com"
# Documented as "no more than 2048 bytes"; people who measured found 2048 itself refused, so one less.
MAX_TEXT_BYTES = 2047
TOKEN_ERRORS = frozenset({40001, 40014, 42001})  # invalid credential, invalid token, token expired
TOKEN_MARGIN_SECONDS = 300  # a cached token is dropped this long before WeChat's expiry
MIN_TOKEN_CACHE_SECONDS = 60  # never cache for less (WeChat limits token fetches per day)
_LOCK_POLL_SECONDS = 0.05

# Compare-and-delete: a lock whose time ran out and was taken by another replica is not ours to free.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class WeChatApiError(Exception):
    """WeChat answered with a non-zero ``errcode``.

    Attributes:
        errcode: WeChat's error code (e.g. 45015, 45047, 40003, -1 for "system busy").
        errmsg: WeChat's message, as sent.
    """

    OUT_OF_WINDOW = 45015

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"WeChat error {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg

    @property
    def out_of_window(self) -> bool:
        """The follower has not written for 48 hours (or unfollowed): nothing can reach them now."""
        return self.errcode == self.OUT_OF_WINDOW


class WeChatUnavailable(Exception):
    """WeChat's API could not be reached or did not answer sensibly (network, timeout, 5xx, not JSON).

    A send that timed out may still have been delivered: WeChat does not say.
    """


# Where a long text may be cut, best first. Each pattern matches the separator; the cut goes after it.
_BOUNDARIES = (
    re.compile(r"\n\s*\n"),  # paragraph
    re.compile(r"\n"),  # line
    re.compile(r"[。！？!?；;…]+[”’\"')）]*\s*|[.](?=\s)\s*"),  # sentence
    re.compile(r"[，、,：:]\s*|\s+"),  # clause or word
)


def _fitting_prefix(text: str, max_bytes: int) -> int:
    """How many characters of ``text`` fit in ``max_bytes`` of UTF-8."""
    encoded = text.encode("utf-8")[:max_bytes]
    return len(encoded.decode("utf-8", errors="ignore"))


def split_text(text: str, max_bytes: int = MAX_TEXT_BYTES) -> list[str]:
    """Split ``text`` into pieces of at most ``max_bytes`` UTF-8 bytes, at the best boundary available.

    A piece ends at the last paragraph break that keeps it at least half full, else the last
    line break, sentence end, comma or space; a text without any is cut between characters.
    Whitespace at the cuts is dropped; nothing else is.

    Args:
        text: what to send.
        max_bytes: the largest piece, in UTF-8 bytes (at least 4, one character of any kind).

    Returns:
        The pieces, in order; ``[]`` for a text that is empty or only whitespace.
    """
    if max_bytes < 4:
        raise ValueError(f"max_bytes must be at least 4, got {max_bytes}")
    pieces: list[str] = []
    rest = text.strip()
    while rest:
        if len(rest.encode("utf-8")) <= max_bytes:
            pieces.append(rest)
            break
        window = rest[: _fitting_prefix(rest, max_bytes)]
        cut = len(window)
        for boundary in _BOUNDARIES:
            ends = [match.end() for match in boundary.finditer(window) if match.end() >= len(window) // 2]
            if ends:
                cut = ends[-1]
                break
        piece = window[:cut].rstrip()
        if not piece:  # the window was all separator; cut between characters instead
            piece, cut = window, len(window)
        pieces.append(piece)
        rest = rest[cut:].lstrip()
    return pieces


class WeChatApi:
    """Client of WeChat's access-token and customer-service message endpoints for one Official Account.

    Args:
        client: Redis (``decode_responses=True``); holds the access token for every replica.
        app_id: the account's AppID.
        app_secret: the account's AppSecret (never logged).
        api_base: WeChat's API origin; tests point it at a local stand-in.
        prefix: Baton's Redis key prefix.
        timeout: seconds one request to WeChat may take in all before `WeChatUnavailable`.
        http: an httpx client to use (it stays open on `aclose`); by default one of its own.
        max_text_bytes: the longest message, in UTF-8 bytes; longer texts are split.

    Attributes:
        token_fetches: requests made to the token endpoint by this instance.
        token_refreshes: tokens WeChat refused (40001, 40014, 42001) and this instance replaced.
        messages_sent: messages WeChat accepted (a split text counts each piece).
    """

    def __init__(
        self,
        client: Redis,
        app_id: str,
        app_secret: str,
        *,
        api_base: str = DEFAULT_API_BASE,
        prefix: str = "baton:",
        timeout: float = 5.0,
        http: httpx.AsyncClient | None = None,
        max_text_bytes: int = MAX_TEXT_BYTES,
    ) -> None:
        self.client = client
        self.app_id = app_id
        self._secret = app_secret
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self.max_text_bytes = max_text_bytes
        self.token_key = f"{prefix}wechat:token:{app_id}"
        self._lock_key = f"{self.token_key}:lock"
        # A fetch takes at most `timeout`; the lock outlives it a little, so a crashed holder frees it soon.
        self._lock_ms = int((timeout + 1.0) * 1000)
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)
        self._local = asyncio.Lock()  # one coroutine per process goes for the Redis lock
        self.token_fetches = 0
        self.token_refreshes = 0
        self.messages_sent = 0
        hide_credentials("httpx")  # httpx logs request URLs, and WeChat wants the secret in them

    def __repr__(self) -> str:
        return f"WeChatApi(app_id={self.app_id!r}, api_base={self.api_base!r})"

    async def access_token(self, *, refresh: bool = False) -> str:
        """The account's access token: Redis's copy, or a new one from WeChat when there is none.

        Args:
            refresh: fetch a new token even if one is cached (the cached one is replaced).

        Returns:
            The token.

        Raises:
            WeChatApiError: the token endpoint refused (40013 invalid AppID, 40125 invalid secret,
                40164 caller's IP not whitelisted, ...).
            WeChatUnavailable: WeChat could not be reached, or another replica's fetch never ended.
        """
        if not refresh:
            cached = await self.client.get(self.token_key)
            if cached:
                return cached
        return await self._obtain(stale=None, force=refresh)

    async def send_text(self, openid: str, text: str) -> None:
        """Send ``text`` to a follower as one or more text messages (split if longer than WeChat allows).

        A token WeChat refuses (40001, 40014, 42001) is replaced once and the message sent again.
        Pieces are sent in order; when one fails, the ones before it have been delivered.

        Args:
            openid: the follower's OpenID.
            text: what to say (not empty).

        Raises:
            ValueError: ``text`` is empty or only whitespace.
            WeChatApiError: WeChat refused a message; ``out_of_window`` tells whether the follower
                has been silent for 48 hours (45015).
            WeChatUnavailable: WeChat could not be reached or answered nonsense.
        """
        pieces = split_text(text, self.max_text_bytes)
        if not pieces:
            raise ValueError("an empty text cannot be sent to WeChat")
        for piece in pieces:
            await self._send_one(openid, piece)

    async def aclose(self) -> None:
        """Close the httpx client if this instance made it."""
        if self._own_http:
            await self._http.aclose()

    async def _send_one(self, openid: str, content: str) -> None:
        """One text message, with one token replacement if WeChat refuses the token."""
        payload = {"touser": openid, "msgtype": "text", "text": {"content": content}}
        # ensure_ascii=False: WeChat shows \uXXXX escapes literally instead of decoding them.
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        token = await self.access_token()
        errcode, errmsg = await self._post_message(token, body)
        if errcode in TOKEN_ERRORS:
            log.info("WeChat refused the access token (errcode %s); fetching a new one", errcode)
            self.token_refreshes += 1
            token = await self._obtain(stale=token, force=False)
            errcode, errmsg = await self._post_message(token, body)
            if errcode in TOKEN_ERRORS:  # once is enough: a second refusal is not the token's age
                log.warning("WeChat refused a freshly fetched access token too (errcode %s)", errcode)
        if errcode != 0:
            raise WeChatApiError(errcode, errmsg)
        self.messages_sent += 1

    async def _post_message(self, token: str, body: bytes) -> tuple[int, str]:
        """POST one message; WeChat's ``(errcode, errmsg)``."""
        answer = await self._request(
            "POST",
            "/cgi-bin/message/custom/send",
            params={"access_token": token},
            content=body,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        return _error(answer)

    async def _obtain(self, *, stale: str | None, force: bool) -> str:
        """A token other than ``stale``: another coroutine's or replica's new one, else one fetched here.

        Only one fetch runs at a time across replicas (a short ``SET NX PX`` lock); the others
        poll Redis until the new token appears, the lock frees up, or their patience runs out.
        """
        async with self._local:
            deadline = time.monotonic() + 2 * self._lock_ms / 1000
            while True:
                if not force:
                    cached = await self.client.get(self.token_key)
                    if cached and cached != stale:
                        return cached
                owner = uuid.uuid4().hex
                if await self.client.set(self._lock_key, owner, nx=True, px=self._lock_ms):
                    try:
                        if not force:  # it may have arrived between the read and the lock
                            cached = await self.client.get(self.token_key)
                            if cached and cached != stale:
                                return cached
                        return await self._fetch_and_store()
                    finally:
                        await self.client.eval(_RELEASE, 1, self._lock_key, owner)
                if time.monotonic() >= deadline:
                    raise WeChatUnavailable("another replica's access-token fetch did not finish in time")
                await asyncio.sleep(_LOCK_POLL_SECONDS)

    async def _fetch_and_store(self) -> str:
        """Fetch a new token from WeChat and cache it in Redis until shortly before it expires."""
        self.token_fetches += 1
        answer = await self._request(
            "GET",
            "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.app_id, "secret": self._secret},
        )
        errcode, errmsg = _error(answer)
        if errcode != 0:
            log.warning(
                "WeChat refused an access token for app %s: errcode %s (%s)", self.app_id, errcode, errmsg
            )
            raise WeChatApiError(errcode, errmsg)
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise WeChatUnavailable("WeChat's token answer has no access_token")
        try:
            expires_in = int(answer.get("expires_in", 7200))
        except (TypeError, ValueError):
            raise WeChatUnavailable("WeChat's token answer has a malformed expires_in") from None
        # Drop it a margin before WeChat does, but not so early that tokens are fetched all the time.
        ttl = max(expires_in - TOKEN_MARGIN_SECONDS, min(expires_in, MIN_TOKEN_CACHE_SECONDS), 1)
        await self.client.set(self.token_key, token, ex=ttl)
        log.info("fetched a WeChat access token for app %s (cached %d s)", self.app_id, ttl)
        return token

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One request to WeChat; its JSON object, or `WeChatUnavailable` (the URL is never in the message)."""
        try:
            async with asyncio.timeout(self.timeout):  # httpx's timeout is per phase; this bounds the whole
                response = await self._http.request(method, self.api_base + path, **kwargs)
        except TimeoutError:
            raise WeChatUnavailable(f"WeChat did not answer {path} within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            reason = redact(str(exc))
            raise WeChatUnavailable(f"WeChat unreachable for {path}: {type(exc).__name__} {reason}") from exc
        if response.status_code >= 500:
            raise WeChatUnavailable(f"WeChat answered {path} with HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            raise WeChatUnavailable(
                f"WeChat answered {path} with HTTP {response.status_code} and no JSON"
            ) from None
        if not isinstance(answer, dict):
            raise WeChatUnavailable(f"WeChat answered {path} with JSON that is not an object")
        return answer


def _error(answer: dict[str, Any]) -> tuple[int, str]:
    """``(errcode, errmsg)`` of an answer; a token answer carries no errcode and counts as 0."""
    try:
        errcode = int(answer.get("errcode", 0))
    except (TypeError, ValueError):
        raise WeChatUnavailable("WeChat answered with a malformed errcode") from None
    return errcode, str(answer.get("errmsg", ""))
