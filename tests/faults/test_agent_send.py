"""``baton serve`` killed (SIGKILL, at the failpoint ``agent_stored``) after it stored an agent's
message and before it answered the desk; the desk sends the message again with the same
``client_message_id`` once the service is back: the customer gets it once, the first-response
clock stopped once.
"""

from __future__ import annotations

import signal
import time

import httpx
import redis

from tests.api.conftest import Agent, WebVisitor
from tests.conftest import TINY_KB, ServiceProcess


def test_an_agent_message_cut_off_by_a_crash_is_sent_once_on_retry(baton_service, redis_server, tmp_path):
    url = redis_server.url.rsplit("/", 1)[0] + "/5"
    redis.Redis.from_url(url).flushdb()
    env = {"BATON_REDIS_PREFIX": "agent-send:", "BATON_FAILPOINT": "agent_stored"}
    service = ServiceProcess(TINY_KB, tmp_path, url, model_dir=baton_service.model_dir, env=env)
    service.start()
    try:
        alice = Agent(service, "alice")
        alice.online()
        visitor = WebVisitor(service)
        visitor.connect()
        visitor.say("I want to talk to a person", "m1")
        (chat,) = _wait_for_chat(alice)
        path = f"/conversations/{chat}/messages"
        body = {"text": "Hello, this is Alice.", "client_message_id": "desk-1"}
        try:
            cut = alice.call("POST", path, json=body)
            raise AssertionError(f"the service answered {cut.status_code} instead of dying")
        except httpx.HTTPError:
            pass  # the service died after storing the message, before answering
        service.process.wait(timeout=30)
        assert service.process.returncode == -signal.SIGKILL
        service.extra_env.pop("BATON_FAILPOINT")
        service.start()

        retried = alice.call("POST", path, json=body)  # the sign-in outlives the restart
        assert retried.status_code == 200, retried.text
        again = alice.call("POST", path, json=body)
        assert again.json()["turn"]["seq"] == retried.json()["turn"]["seq"]
        client = redis.Redis.from_url(url, decode_responses=True)
        try:
            texts = [
                t for t in client.lrange(f"agent-send:conv:{chat}:turns", 0, -1) if '"sender":"agent"' in t
            ]
            stats = client.hgetall("agent-send:metrics:total")
        finally:
            client.close()
        assert len(texts) == 1 and "Hello, this is Alice." in texts[0]
        assert stats["first_response_count"] == "1"
        visitor.close()
    finally:
        service.stop()


def _wait_for_chat(agent: Agent) -> list[str]:
    """The agent's chats, once one is routed to them (bounded)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        chats = [c["conversation_id"] for c in agent.call("GET", "/chats").json()["chats"]]
        if chats:
            return chats
        time.sleep(0.1)
    raise AssertionError("no chat was routed to the agent")
