"""Redis killed with SIGKILL while ``baton serve`` runs with customers connected, and started again on
the same AOF and port: the service recovers by itself (its pub/sub subscriptions and stream
consumers reconnect), every message acknowledged before the crash is still there, a message sent
during the outage is refused with a clear error and taken when sent again, and customers and
agents keep talking live over the connections they already had.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from conversations.redis_server import RedisServer, free_port
from tests.api.conftest import WAIT, Agent, WebVisitor, visitor_wait
from tests.conftest import TINY_KB, ServiceProcess

CUSTOMERS = 8


@pytest.fixture
def service_on_own_redis(baton_service, tmp_path) -> Iterator[tuple[ServiceProcess, RedisServer]]:
    """A ``baton serve`` on a redis-server of the test's own, which the test may kill."""
    server = RedisServer(data_dir=tmp_path / "redis", port=free_port()).start()
    service = ServiceProcess(TINY_KB, tmp_path, server.url, model_dir=baton_service.model_dir)
    holder = {"redis": server}
    try:
        service.start()
        yield service, holder
    finally:
        service.stop()
        holder["redis"].stop()


def _ack(frames: list[dict]) -> dict:
    return next(f for f in frames if f["type"] in ("ack", "error"))


def test_redis_killed_and_restarted_under_traffic(service_on_own_redis):
    service, holder = service_on_own_redis
    server: RedisServer = holder["redis"]
    visitors = [WebVisitor(service) for _ in range(CUSTOMERS)]
    for visitor in visitors:
        visitor.connect()
    alice = Agent(service, "alice")
    alice.online()
    alice.connect()

    # Before the crash: every message acknowledged and answered.
    before = {v.visitor_id: _ack(v.say("how much is shipping", "q1")) for v in visitors}
    assert all(a["type"] == "ack" and not a["duplicate"] for a in before.values()), before

    os.kill(server.pid, signal.SIGKILL)
    time.sleep(0.2)
    # During the outage: a clear, retryable error, never a stored-but-lost message.
    during = _ack(visitors[0].say("and how long does delivery take?", "q2"))
    assert during["type"] == "error" and during["code"] == "unavailable" and during["status"] == 503

    holder["redis"] = RedisServer(data_dir=server.data_dir, port=server.port).start()

    # The same sockets go on: the resend is taken and answered; nothing from before is lost.
    deadline = time.monotonic() + WAIT
    while (again := _ack(visitors[0].say("and how long does delivery take?", "q2")))["type"] == "error":
        assert time.monotonic() < deadline, again
        time.sleep(0.5)
    assert again["type"] == "ack" and not again["duplicate"]
    for visitor in visitors[1:]:
        frames = visitor.say("thanks! one more: how much is shipping to Shanghai?", "q3")
        assert _ack(frames)["type"] == "ack"
        assert any(f["type"] == "turn" and f["turn"]["sender"] == "bot" for f in frames), frames

    # Pub/sub came back: a handoff reaches the agent's open socket, and her answer the customer's.
    visitors[1].say("I want to talk to a person", "q4")
    assigned = alice.wait_for(lambda f: f["type"] == "assigned")
    conversation_id = assigned["handoff"]["conversation_id"]
    answer = alice.call("POST", f"/conversations/{conversation_id}/messages", json={"text": "Alice here."})
    assert answer.status_code == 200, answer.text
    visitor_wait(visitors[1], lambda f: f["type"] == "turn" and f["turn"]["text"] == "Alice here.")

    client = redis.Redis.from_url(holder["redis"].url, decode_responses=True)
    try:
        for visitor in visitors:
            customer = client.get(f"baton:identity:web:{visitor.visitor_id}")
            (conversation,) = client.zrange(f"baton:customer:{customer}:conversations", 0, -1)
            turns = [json.loads(t) for t in client.lrange(f"baton:conv:{conversation}:turns", 0, -1)]
            first = next(t for t in turns if t.get("client_message_id") == "q1")
            assert first["seq"] == before[visitor.visitor_id]["seq"]  # acknowledged before the crash: kept
            assert any(t["sender"] == "bot" and t.get("reply_to") == first["seq"] for t in turns)
            ids = [t.get("client_message_id") for t in turns if t["sender"] == "customer"]
            assert len(ids) == len(set(ids))  # nothing stored twice
    finally:
        client.close()
    for visitor in visitors:
        visitor.close()
    alice.close()
