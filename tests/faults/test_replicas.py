"""Three ``baton serve`` replicas on one Redis: a web customer on A, the agent on B, a WeChat follower
on C. A is killed with SIGKILL in the middle of the conversation, with the customer's last message
stored but not yet seen by anyone; the customer's page reconnects to B and sends it again, and the
conversation goes on with nothing lost or doubled, on every channel. Then C dies right after it
stored an agent's message, before answering the desk; the desk sends it again through B with the
same ``client_message_id``, and the customer gets it once.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from tests.api.conftest import WAIT, Agent, WebVisitor, visitor_wait
from tests.api.test_wechat_channel import APP_ID, SECRET, TOKEN, Follower, passive_text, sent_to
from tests.api.wechat_fake import FakeWeChatApi
from tests.conftest import TINY_KB, ServiceProcess

PREFIX = "replicas:"
SECRET_KEY = "replicas-test-signing-key-0123456789abcdef"


@pytest.fixture
def replicas(
    baton_service, redis_server, tmp_path
) -> Iterator[tuple[dict[str, ServiceProcess], FakeWeChatApi, str]]:
    """Replicas A, B, C of one service (one Redis database, prefix and signing key), WeChat on."""
    url = redis_server.url.rsplit("/", 1)[0] + "/4"
    redis.Redis.from_url(url).flushdb()
    with FakeWeChatApi(APP_ID, SECRET) as wechat:
        env = {
            "BATON_REDIS_PREFIX": PREFIX,
            "BATON_SECRET_KEY": SECRET_KEY,
            "BATON_WECHAT_TOKEN": TOKEN,
            "BATON_WECHAT_APP_ID": APP_ID,
            "BATON_WECHAT_APP_SECRET": SECRET,
            "BATON_WECHAT_API_BASE": wechat.base_url,
            "BATON_RECLAIM_SECONDS": "2",  # B takes over what A leaves soon enough for a test
        }
        # A dies (SIGKILL, by itself) the moment it has stored the second customer message it takes.
        # C dies the moment it has stored the first agent message sent through it.
        crash = {"A": {"BATON_FAILPOINT": "stored:2"}, "C": {"BATON_FAILPOINT": "agent_stored"}}
        services = {
            name: ServiceProcess(
                TINY_KB,
                tmp_path / name,
                url,
                model_dir=baton_service.model_dir,
                env={**env, **crash.get(name, {})},
            )
            for name in "ABC"
        }
        try:
            for service in services.values():
                service.workdir.mkdir()
            with ThreadPoolExecutor(len(services)) as pool:  # side by side: each start loads the models
                list(pool.map(ServiceProcess.start, services.values()))
            yield services, wechat, url
        finally:
            for service in services.values():
                service.stop()


def transcript(url: str, visitor_id: str) -> list[tuple[str, str]]:
    """(sender, text) of the web visitor's conversation, read from Redis."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        customer = client.get(f"{PREFIX}identity:web:{visitor_id}")
        (conversation,) = client.zrange(f"{PREFIX}customer:{customer}:conversations", 0, -1)
        turns = [json.loads(t) for t in client.lrange(f"{PREFIX}conv:{conversation}:turns", 0, -1)]
        return [(t["sender"], t["text"]) for t in turns]
    finally:
        client.close()


def test_a_replica_killed_mid_conversation_loses_and_doubles_nothing(replicas):
    services, wechat, url = replicas
    a, b, c = services["A"], services["B"], services["C"]
    alice = Agent(b, "alice")
    alice.online()
    assert alice.connect()["type"] == "hello"

    # The customer on A asks for a person; the agent on B gets the chat and answers.
    visitor = WebVisitor(a)
    visitor.connect()
    visitor.say("I want to talk to a person", "m1")
    assigned = alice.wait_for(lambda f: f["type"] == "assigned")
    conversation_id = assigned["handoff"]["conversation_id"]
    reply = alice.call("POST", f"/conversations/{conversation_id}/messages", json={"text": "Hi, Alice here."})
    assert reply.status_code == 200, reply.text
    visitor_wait(visitor, lambda f: f["type"] == "turn" and f["turn"]["text"] == "Hi, Alice here.")

    # A dies the moment it has stored the customer's next message: no ack, nobody has seen it.
    visitor.send_raw(
        json.dumps({"type": "message", "text": "my order LM2024051234 is late", "client_message_id": "m2"})
    )
    a.process.wait(timeout=WAIT)
    assert a.process.returncode == -signal.SIGKILL
    assert transcript(url, visitor.visitor_id)[-1] == ("customer", "my order LM2024051234 is late")
    visitor.close()

    # The page reconnects, to B, and sends the message again: one copy, and the agent sees it.
    moved = WebVisitor(b, token=visitor.token)
    assert moved.visitor_id == visitor.visitor_id
    hello = moved.connect(conversation=conversation_id, after=4)
    assert hello["conversation_id"] == conversation_id and hello["state"] == "assigned"
    moved.send_raw(
        json.dumps({"type": "message", "text": "my order LM2024051234 is late", "client_message_id": "m2"})
    )
    ack = visitor_wait(moved, lambda f: f["type"] == "ack")[-1]
    assert ack["seq"] == 5 and ack["duplicate"]
    seen = alice.wait_for(lambda f: f["type"] == "understood" and f["conversation_id"] == conversation_id)
    assert seen["seq"] == 5

    # A WeChat follower on C is served by the same agent through B; the answer reaches WeChat once.
    follower = Follower(c)
    answer = passive_text(follower.say("人工客服"))
    assert answer
    second = alice.wait_for(
        lambda f: f["type"] == "assigned" and f["handoff"]["conversation_id"] != conversation_id
    )
    wechat_chat = second["handoff"]["conversation_id"]
    text = f"您好，我是 Alice {uuid.uuid4().hex[:6]}"
    assert (
        alice.call("POST", f"/conversations/{wechat_chat}/messages", json={"text": text}).status_code == 200
    )
    assert text in sent_to(wechat, follower.openid, 2, including=text)
    time.sleep(1.0)  # a second copy would come from another replica's outbox within this
    assert [m.content for m in wechat.sent if m.openid == follower.openid].count(text) == 1

    # Back on the web chat through B: the agent's answer, and the transcript holds each turn once.
    alice.call(
        "POST", f"/conversations/{conversation_id}/messages", json={"text": "Let me check that order."}
    )
    visitor_wait(moved, lambda f: f["type"] == "turn" and f["turn"]["text"] == "Let me check that order.")
    turns = transcript(url, visitor.visitor_id)
    counts = Counter(turns)
    assert all(n == 1 for n in counts.values()), counts
    assert [s for s, _ in turns].count("customer") == 2
    assert ("agent", "Hi, Alice here.") in turns and ("agent", "Let me check that order.") in turns

    # The desk, now on C, sends a message; C dies once it is stored; the desk retries through B.
    on_c = Agent(c, "alice")
    body = {"text": "Your parcel left the warehouse today.", "client_message_id": "desk-42"}
    with pytest.raises(httpx.HTTPError):
        on_c.call("POST", f"/conversations/{conversation_id}/messages", json=body)
    c.process.wait(timeout=WAIT)
    assert c.process.returncode == -signal.SIGKILL
    retried = alice.call("POST", f"/conversations/{conversation_id}/messages", json=body)
    assert retried.status_code == 200, retried.text
    visitor_wait(moved, lambda f: f["type"] == "turn" and f["turn"]["text"] == body["text"])
    assert transcript(url, visitor.visitor_id).count(("agent", body["text"])) == 1
    moved.close()
    alice.close()
