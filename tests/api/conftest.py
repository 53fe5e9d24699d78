"""Clients for the real service (`baton_service`): a web visitor over WebSocket, an app user over REST."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import ServiceProcess

WAIT = 30.0  # seconds a test waits for a frame before it fails (a generous bound, not a timing check)


class WebVisitor:
    """A chat-page visitor: a token from the service, a WebSocket, and helpers to read its frames."""

    def __init__(self, service: ServiceProcess, token: str | None = None) -> None:
        self.service = service
        answer = httpx.post(f"{service.url}/api/v1/web/session", json={"token": token} if token else {})
        answer.raise_for_status()
        self.visitor_id = answer.json()["visitor_id"]
        self.token = answer.json()["token"]
        self.ws: ClientConnection | None = None
        self.hello: dict[str, Any] = {}
        self.replayed: list[dict[str, Any]] = []

    def connect(self, conversation: str = "", after: int = 0) -> dict[str, Any]:
        """Open the WebSocket; return the hello frame (turns replayed after it are in ``replayed``)."""
        url = f"{self.service.ws_url}/ws/web?token={self.token}&conversation={conversation}&after={after}"
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(url, open_timeout=WAIT))
        self.hello = self.frame()
        self.replayed = []
        return self.hello

    def frame(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next frame."""
        assert self.ws is not None
        return json.loads(self.ws.recv(timeout=timeout))

    def drain_replay(self, count: int) -> list[dict[str, Any]]:
        """Read ``count`` replayed turn frames."""
        self.replayed = [self.frame() for _ in range(count)]
        return self.replayed

    def send_raw(self, text: str) -> None:
        """Send a frame as given (for malformed input)."""
        assert self.ws is not None
        self.ws.send(text)

    def say(self, text: str, client_message_id: str | None = None) -> list[dict[str, Any]]:
        """Send a message; return every frame up to the end of its handling.

        That is the ``typing: false`` after the bot's answer, an error, or, when the bot stays
        silent (no typing indicator follows the ack within a second), what came after the ack.
        """
        client_message_id = client_message_id or uuid.uuid4().hex
        self.send_raw(json.dumps({"type": "message", "text": text, "client_message_id": client_message_id}))
        frames: list[dict[str, Any]] = []
        while True:
            frame = self.frame()
            frames.append(frame)
            if frame["type"] == "error" or (frame["type"] == "typing" and not frame["on"]):
                return frames
            if frame["type"] == "ack" and (frame["duplicate"] or not self._typing_follows(frames)):
                return frames

    def _typing_follows(self, frames: list[dict[str, Any]]) -> bool:
        """Read frames into ``frames`` until a typing indicator (True) or a second of silence (False)."""
        try:
            while True:
                frames.append(self.frame(timeout=1.0))
                if frames[-1]["type"] == "typing":
                    return True
        except TimeoutError:
            return False

    def close(self) -> None:
        """Close the WebSocket."""
        if self.ws is not None:
            self._stack.close()
            self.ws = None


def outcome(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """The ack or error frame among ``frames`` (the echo of a first message may come before its ack)."""
    return next(f for f in frames if f["type"] in ("ack", "error"))


def turns_in(frames: list[dict[str, Any]], sender: str | None = None) -> list[dict[str, Any]]:
    """The turns carried by ``frames`` (of ``sender`` only, if given)."""
    turns = [f["turn"] for f in frames if f["type"] == "turn"]
    return [t for t in turns if sender is None or t["sender"] == sender]


def app_token(user_id: str, ttl: float = 3600, secret: str = ServiceProcess.APP_SECRET) -> str:
    """A user token as the app's backend makes it (README: "The app API")."""
    expires = int(time.time() + ttl)
    signature = hmac.new(secret.encode(), f"app:{user_id}.{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{user_id}.{expires}.{signature}"


def app_headers(user_id: str, **token_args: Any) -> dict[str, str]:
    """The headers of an app request by ``user_id``."""
    return {
        "X-Baton-App-Key": ServiceProcess.APP_KEY,
        "Authorization": f"Bearer {app_token(user_id, **token_args)}",
    }


@pytest.fixture
def visitor(baton_service):
    """A new web visitor (closed after the test)."""
    client = WebVisitor(baton_service)
    yield client
    client.close()


@pytest.fixture
def app_client(baton_service):
    """An HTTP client for the app API of the service."""
    with httpx.Client(base_url=baton_service.url, timeout=WAIT) as client:
        yield client


DEMO = ("alice", "bob", "chen", "sam")


class Agent:
    """A demo agent (`DEMO`) signed in over the agent API, with an optional live WebSocket."""

    def __init__(self, service: ServiceProcess, agent_id: str, password: str | None = None) -> None:
        self.service = service
        self.id = agent_id
        answer = httpx.post(
            f"{service.url}/api/v1/agent/session",
            json={"agent_id": agent_id, "password": password or f"{agent_id}-demo"},
        )
        answer.raise_for_status()
        self.token = answer.json()["token"]
        self.ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.service.url}/api/v1/agent{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=WAIT,
            **kw,
        )

    def online(self, on: bool = True) -> None:
        assert self.call("PUT", "/status", json={"online": on}).json()["online"] is on

    def connect(self) -> dict[str, Any]:
        self.ws = self._stack.enter_context(
            connect(f"{self.service.ws_url}/api/v1/agent/ws?token={self.token}", open_timeout=WAIT)
        )
        return self.frame()

    def frame(self, timeout: float = WAIT) -> dict[str, Any]:
        assert self.ws is not None
        return json.loads(self.ws.recv(timeout=timeout))

    def wait_for(self, test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            frame = self.frame(timeout=max(0.1, deadline - time.monotonic()))
            if test(frame):
                return frame
        raise AssertionError("the expected frame did not come")

    def close(self) -> None:
        self._stack.close()


def visitor_wait(visitor: WebVisitor, test: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Frames the visitor receives up to and including the first that passes ``test``."""
    seen = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        seen.append(visitor.frame(timeout=max(0.1, deadline - time.monotonic())))
        if test(seen[-1]):
            return seen
    raise AssertionError(f"the expected frame did not come; got {seen}")


def clear_desk(service: ServiceProcess) -> None:
    """Every demo agent offline with no chat; no chat waiting (a supervisor closes them)."""
    agents = [Agent(service, name) for name in DEMO]
    for agent in agents:
        agent.online(False)
        for chat in agent.call("GET", "/chats").json()["chats"]:
            agent.call("POST", f"/conversations/{chat['conversation_id']}/resolve")
    supervisor = agents[-1]
    for waiting in supervisor.call("GET", "/queue").json()["waiting"]:
        supervisor.call("POST", f"/conversations/{waiting['conversation_id']}/close")
    assert supervisor.call("GET", "/queue").json()["waiting"] == []
