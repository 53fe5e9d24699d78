"""A stand-in for WeChat's API on 127.0.0.1: the access-token and customer-service message endpoints.

It behaves as WeChat documents them (errcodes and all) and lets a test steer and watch it::

    with FakeWeChatApi(app_id="wx0123", app_secret="s3cret") as wechat:
        api = WeChatApi(redis, "wx0123", "s3cret", api_base=wechat.base_url)
        ...
        assert wechat.wait_for(1)[0].content == "您好"

A real HTTP server in a background thread, so the client under test goes through real sockets.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN_PATH = "/cgi-bin/token"
SEND_PATH = "/cgi-bin/message/custom/send"
# WeChat keeps the previous token working for 5 minutes after a new one is issued.
DEFAULT_GRACE_SECONDS = 300.0

ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40008: "invalid message type",
    40013: "invalid appid",
    40014: "invalid access_token",
    40125: "invalid appsecret",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    44002: "empty post data",
    45002: "content size out of limit",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    47001: "data format error",
}

# A \uXXXX escape in raw JSON, not preceded by an escaped backslash ("\\u" is a backslash and a "u").
_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-fA-F]{4})")


@dataclass(frozen=True)
class SentMessage:
    """A message WeChat accepted, as the follower would see it.

    Attributes:
        openid: the follower.
        msgtype: ``text`` (or whatever type was sent).
        content: the text shown; a ``\\uXXXX`` escape in the request shows up literally, as on WeChat.
        time: when it arrived (``time.time()``).
    """

    openid: str
    msgtype: str
    content: str
    time: float


class FakeWeChatApi:
    """WeChat's token and customer-service message endpoints, served on 127.0.0.1 from a thread.

    Args:
        app_id: the only AppID it knows (others get 40013).
        app_secret: that AppID's secret (others get 40125).
        token_ttl: seconds an issued token lasts (``expires_in``); then 42001.
        grace: seconds an older token keeps working after a newer one is issued; then 40001.
        max_content_bytes: the longest text content in UTF-8 bytes; longer gets 45002.
        reply_quota: messages a follower may receive before writing again (45047 after);
            ``None`` for no limit. WeChat documents a small quota per message a follower sends.

    Attributes:
        base_url: ``http://127.0.0.1:PORT``, for ``WeChatApi(api_base=...)``.
        sent: messages accepted, in arrival order (only ever appended to, so safe to read from the
            test's thread; `wait_for` waits for them).
        token_requests: requests to the token endpoint, refused ones included.
        send_requests: requests to the message endpoint, refused ones included.
        tokens: every token issued, oldest first.
    """

    def __init__(
        self,
        app_id: str = "wx0000000000000001",
        app_secret: str = "fake-app-secret",
        *,
        token_ttl: float = 7200.0,
        grace: float = DEFAULT_GRACE_SECONDS,
        max_content_bytes: int = 2048,
        reply_quota: int | None = None,
    ) -> None:
        self.app_id = app_id
        self.app_secret = app_secret
        self.token_ttl = token_ttl
        self.grace = grace
        self.max_content_bytes = max_content_bytes
        self.reply_quota = reply_quota
        self.sent: list[SentMessage] = []
        self.token_requests = 0
        self.send_requests = 0
        self.tokens: list[str] = []
        self._expiry: dict[str, float] = {}  # token -> monotonic time it stops working
        self._silent: set[str] = set()
        self._invalid: set[str] = set()
        self._replies: dict[str, int] = {}
        self._failures: dict[str, list[int]] = {"send": [], "token": []}
        self._delays: dict[str, list[float]] = {"send": [], "token": []}
        self._raw: dict[str, list[tuple[int, bytes]]] = {"send": [], "token": []}
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> FakeWeChatApi:
        """Listen on a free port of 127.0.0.1 and serve from a daemon thread."""
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True  # a delayed answer must not hold up close()
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-wechat", daemon=True
        )  # polls 20 times a second, so close() returns at once
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port (delayed answers are cut short)."""
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeWeChatApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        """Where it listens, e.g. ``http://127.0.0.1:40123``."""
        assert self._server is not None, "start() it first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # Steering

    def expire_tokens(self) -> None:
        """Every token issued so far answers 42001 (access_token expired) from now on."""
        with self._lock:
            now = time.monotonic()
            for token in self._expiry:
                self._expiry[token] = min(self._expiry[token], now)

    def out_of_window(self, openid: str) -> None:
        """The follower has not written for 48 hours: messages to them get 45015."""
        with self._lock:
            self._silent.add(openid)

    def follower_wrote(self, openid: str) -> None:
        """The follower wrote again: their 48-hour window and reply quota start over."""
        with self._lock:
            self._silent.discard(openid)
            self._replies.pop(openid, None)

    def invalid_openid(self, openid: str) -> None:
        """This OpenID does not belong to the account: messages to it get 40003."""
        with self._lock:
            self._invalid.add(openid)

    def fail_next(self, errcode: int, *, times: int = 1, endpoint: str = "send") -> None:
        """The next ``times`` requests to ``endpoint`` (``send`` or ``token``) are answered with ``errcode``."""
        with self._lock:
            self._failures[endpoint].extend([errcode] * times)

    def delay_next(self, seconds: float, *, times: int = 1, endpoint: str = "send") -> None:
        """The next ``times`` requests to ``endpoint`` are answered only after ``seconds``."""
        with self._lock:
            self._delays[endpoint].extend([seconds] * times)

    def respond_next(self, status: int, body: bytes, *, endpoint: str = "send") -> None:
        """The next request to ``endpoint`` gets this raw HTTP answer (a 502 page, garbage, ...)."""
        with self._lock:
            self._raw[endpoint].append((status, body))

    # Watching

    def wait_for(self, count: int, timeout: float = 5.0) -> list[SentMessage]:
        """The first ``count`` messages accepted, waiting up to ``timeout`` seconds for them.

        Raises:
            AssertionError: fewer arrived in time (the message lists those that did).
        """
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.sent) >= count, timeout=timeout):
                raise AssertionError(
                    f"{len(self.sent)} of {count} WeChat messages after {timeout} s: {self.sent}"
                )
            return self.sent[:count]

    def valid_tokens(self) -> list[str]:
        """The tokens that would be accepted right now."""
        with self._lock:
            now = time.monotonic()
            return [token for token in self.tokens if self._expiry[token] > now]

    # The two endpoints (called from the server's threads)

    def _answer_token(self, query: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            self.token_requests += 1
            if self._failures["token"]:
                return _err(self._failures["token"].pop(0))
            if query.get("grant_type") != "client_credential":
                return _err(40002)
            if not query.get("appid"):
                return _err(41002)
            if not query.get("secret"):
                return _err(41004)
            if query["appid"] != self.app_id:
                return _err(40013)
            if query["secret"] != self.app_secret:
                return _err(40125)
            now = time.monotonic()
            for older in self.tokens:  # a new token retires the older ones after the grace period
                self._expiry[older] = min(self._expiry[older], now + self.grace)
            token = secrets.token_urlsafe(48)
            self.tokens.append(token)
            self._expiry[token] = now + self.token_ttl
            return {"access_token": token, "expires_in": int(self.token_ttl)}

    def _answer_send(self, query: dict[str, str], body: bytes) -> dict[str, Any]:
        with self._lock:
            self.send_requests += 1
            token = query.get("access_token")
            if not token:
                return _err(41001)
            if token not in self._expiry:
                return _err(40001)
            now = time.monotonic()
            if self._expiry[token] <= now:
                # Retired by a newer token: "not latest" (40001); simply old: expired (42001).
                newest = self.tokens[-1]
                return _err(42001 if token == newest or self._expiry[newest] <= now else 40001)
            if self._failures["send"]:
                return _err(self._failures["send"].pop(0))
            if not body:
                return _err(44002)
            message = _parse_message(body)
            if message is None:
                return _err(47001)
            openid, msgtype, content = message
            if openid in self._invalid or not openid:
                return _err(40003)
            if msgtype != "text":
                return _err(40008)
            if len(content.encode("utf-8")) > self.max_content_bytes:
                return _err(45002)
            if openid in self._silent:
                return _err(45015)
            if self.reply_quota is not None and self._replies.get(openid, 0) >= self.reply_quota:
                return _err(45047)
            self._replies[openid] = self._replies.get(openid, 0) + 1
            self.sent.append(SentMessage(openid, msgtype, content, time.time()))
            self._arrived.notify_all()
            return _err(0)

    def _take(self, table: dict[str, list[Any]], endpoint: str) -> Any:
        with self._lock:
            return table[endpoint].pop(0) if table[endpoint] else None


def _err(errcode: int) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": "ok" if errcode == 0 else ERRMSG.get(errcode, "error")}


def _parse_message(body: bytes) -> tuple[str, str, str] | None:
    """``(touser, msgtype, text content)`` of a request body, or None when it is not such JSON.

    Escapes are kept literally (``\\u4f60`` stays six characters), which is how WeChat shows them.
    """
    try:
        raw = body.decode("utf-8")
        data = json.loads(_ESCAPE.sub(r"\1\\\\u\2", raw))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    openid, msgtype = data.get("touser"), data.get("msgtype")
    if not isinstance(openid, str) or not isinstance(msgtype, str):
        return None
    text = data.get("text")
    if msgtype == "text":
        if not isinstance(text, dict) or not isinstance(text.get("content"), str):
            return None
        return openid, msgtype, text["content"]
    return openid, msgtype, ""


class _Server(ThreadingHTTPServer):
    """A backlog of 5 (the default) drops concurrent connections, which then wait a second to retry."""

    request_queue_size = 128


class _Handler(BaseHTTPRequestHandler):
    """Routes the two endpoints to the owning `FakeWeChatApi`."""

    owner: FakeWeChatApi  # HTTP/1.0: one request per connection, so close() leaves no idle sockets

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        owner = self.owner
        endpoint = {TOKEN_PATH: "token", SEND_PATH: "send"}.get(url.path)
        if endpoint is None:
            self._reply(404, b'{"errcode":404,"errmsg":"not found"}')
            return
        delay = owner._take(owner._delays, endpoint)
        if delay:
            owner._closing.wait(delay)
        raw = owner._take(owner._raw, endpoint)
        if raw is not None:
            self._reply(*raw)
            return
        if endpoint == "token":
            answer = owner._answer_token(query) if method == "GET" else _err(43001)
        else:
            answer = owner._answer_send(query, body) if method == "POST" else _err(43002)
        self._reply(200, json.dumps(answer, ensure_ascii=False).encode("utf-8"))

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; encoding=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `FakeWeChatApi`'s attributes, not an access log."""
