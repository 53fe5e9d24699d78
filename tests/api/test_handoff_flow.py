"""Escalation and handoff end to end: a customer on the web chat, agents on the agent API.

Everything is real: `baton serve` as a subprocess, Redis, the NLU and sentiment models,
WebSockets and HTTP on loopback. The demo agents exist (README); each test puts the agents
it needs online and everyone offline again afterwards, so the order of tests does not matter.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.api.conftest import DEMO, Agent, WebVisitor, visitor_wait


def is_turn(sender: str, contains: str = "") -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["type"] == "turn" and f["turn"]["sender"] == sender and contains in f["turn"]["text"]


@pytest.fixture
def agents(baton_service) -> Iterator[dict[str, Agent]]:
    signed_in = {name: Agent(baton_service, name) for name in DEMO}
    try:
        yield signed_in
    finally:
        for agent in signed_in.values():
            agent.online(False)
            agent.close()


@pytest.fixture
def customer(baton_service) -> Iterator[WebVisitor]:
    visitor = WebVisitor(baton_service)
    visitor.connect()
    try:
        yield visitor
    finally:
        visitor.close()


def test_sign_in_refuses_wrong_passwords_and_unknown_agents(baton_service):
    for body in ({"agent_id": "alice", "password": "nope"}, {"agent_id": "mallory", "password": "x"}):
        answer = httpx.post(f"{baton_service.url}/api/v1/agent/session", json=body)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
    assert httpx.get(f"{baton_service.url}/api/v1/agent/queue").status_code == 401
    bad = httpx.get(f"{baton_service.url}/api/v1/agent/queue", headers={"Authorization": "Bearer x.1.y"})
    assert bad.status_code == 401


def test_signing_out_ends_the_token(baton_service):
    agent = Agent(baton_service, "chen")
    assert agent.call("GET", "/me").status_code == 200
    assert agent.call("DELETE", "/session").status_code == 200
    assert agent.call("GET", "/me").status_code == 401


def test_a_request_for_a_person_reaches_the_agent_with_the_package_and_the_whole_round_trip_works(
    agents, customer
):
    alice = agents["alice"]
    alice.online()
    alice.connect()
    customer.say("what does shipping cost?")
    customer.send_raw(
        json.dumps({"type": "message", "text": "I want to talk to a human", "client_message_id": "h1"})
    )
    visitor_wait(customer, lambda f: f["type"] == "state" and f["state"] == "queued")

    assigned = alice.wait_for(lambda f: f["type"] == "assigned")
    package = assigned["package"]
    conversation_id = assigned["handoff"]["conversation_id"]
    assert assigned["handoff"]["reasons"][0] == "explicit_request"
    assert "shipping" in assigned["handoff"]["summary"]  # the queue's preview of the chat
    assert [t["text"] for t in package["transcript"] if t["sender"] == "customer"] == [
        "what does shipping cost?",
        "I want to talk to a human",
    ]
    assert package["customer"]["identities"][0]["channel"] == "web"
    assert package["summary"] and len(package["suggestions"]) >= 1
    assert package["trace"][0]["intent"] == "faq/shipping_cost"
    assert package["trace"][0]["sentiment"]["label"] in ("neutral", "positive", "negative", "angry")
    visitor_wait(customer, lambda f: f["type"] == "state" and f["state"] == "assigned")

    # The agent's reply reaches the customer; an internal note never does.
    assert (
        alice.call(
            "POST", f"/conversations/{conversation_id}/notes", json={"text": "SECRET NOTE"}
        ).status_code
        == 200
    )
    sent = alice.call(
        "POST", f"/conversations/{conversation_id}/messages", json={"text": "Hi, I'm Alice. How can I help?"}
    )
    assert sent.status_code == 200
    assert sent.json()["turn"]["author"] == "alice"  # the transcript says which agent wrote it
    frames = visitor_wait(customer, is_turn("agent", "I'm Alice"))
    assert all("author" not in f.get("turn", {}) for f in frames)  # agents' ids stay internal
    assert not any("SECRET NOTE" in json.dumps(f) for f in frames)

    # The customer's next message goes to the agent, not the bot.
    customer.send_raw(
        json.dumps({"type": "message", "text": "my parcel is broken", "client_message_id": "h2"})
    )
    turn = alice.wait_for(lambda f: f["type"] == "turn" and f["turn"]["sender"] == "customer")
    assert turn["turn"]["text"] == "my parcel is broken"
    with pytest.raises(TimeoutError):  # the bot stays silent while a person has the chat
        visitor_wait(customer, is_turn("bot"))

    # Resolve: the conversation ends and the customer is asked for a rating, which is kept.
    assert alice.call("POST", f"/conversations/{conversation_id}/resolve").status_code == 200
    rating = visitor_wait(customer, lambda f: f["type"] == "turn" and f["turn"]["buttons"])[-1]["turn"]
    assert [b["payload"] for b in rating["buttons"]] == [f"/rate_{n}" for n in range(1, 6)]
    before = httpx.get(f"{customer.service.url}/api/v1/stats").json()["ratings"]["count"]
    customer.send_raw(json.dumps({"type": "message", "text": "/rate_5", "client_message_id": "h3"}))
    visitor_wait(customer, is_turn("system"))
    stats = httpx.get(f"{customer.service.url}/api/v1/stats").json()
    assert stats["ratings"]["count"] == before + 1

    # The next message starts a fresh conversation with the bot, not the queue.
    frames = customer.say("how much is shipping?")
    acks = [f for f in frames if f["type"] == "ack"]
    assert acks[-1]["conversation_id"] != conversation_id
    assert any(t["sender"] == "bot" for t in (f["turn"] for f in frames if f["type"] == "turn"))


def test_another_agent_cannot_open_or_answer_a_chat_that_is_not_theirs(agents, customer):
    alice, bob = agents["alice"], agents["bob"]
    alice.online()
    alice.connect()
    customer.send_raw(json.dumps({"type": "message", "text": "转人工", "client_message_id": "x1"}))
    assigned = alice.wait_for(lambda f: f["type"] == "assigned")
    conversation_id = assigned["handoff"]["conversation_id"]
    for method, path, body in (
        ("GET", f"/conversations/{conversation_id}", None),
        ("POST", f"/conversations/{conversation_id}/messages", {"text": "hello from bob"}),
        ("POST", f"/conversations/{conversation_id}/resolve", None),
        ("POST", f"/conversations/{conversation_id}/notes", {"text": "bob was here"}),
    ):
        answer = bob.call(method, path, json=body)
        assert answer.status_code == 403, (path, answer.text)
    supervisor = agents["sam"]
    assert supervisor.call("GET", f"/conversations/{conversation_id}").status_code == 200
    assert alice.call("POST", f"/conversations/{conversation_id}/resolve").status_code == 200


def test_hand_back_returns_the_customer_to_the_bot(agents, customer):
    alice = agents["alice"]
    alice.online()
    alice.connect()
    customer.send_raw(json.dumps({"type": "message", "text": "agent please", "client_message_id": "b1"}))
    conversation_id = alice.wait_for(lambda f: f["type"] == "assigned")["handoff"]["conversation_id"]
    assert alice.call("POST", f"/conversations/{conversation_id}/handback").status_code == 200
    visitor_wait(customer, lambda f: f["type"] == "state" and f["state"] == "bot")
    frames = customer.say("how much is shipping?")
    bot_turns = [f["turn"] for f in frames if f["type"] == "turn" and f["turn"]["sender"] == "bot"]
    assert bot_turns and all(f["conversation_id"] == conversation_id for f in frames if f["type"] == "ack")


def test_transfer_to_another_agent_moves_the_chat_to_their_socket(agents, customer):
    alice, bob = agents["alice"], agents["bob"]
    alice.online()
    alice.connect()
    customer.send_raw(json.dumps({"type": "message", "text": "talk to a human", "client_message_id": "t1"}))
    conversation_id = alice.wait_for(lambda f: f["type"] == "assigned")["handoff"]["conversation_id"]
    bob.online()
    bob.connect()
    # Earlier tests may have left chats that were routed to them: compare with each one's own list.
    listed = {a["id"]: a for a in alice.call("GET", "/agents").json()["agents"]}
    for agent in (alice, bob):
        chats = agent.call("GET", "/chats").json()["chats"]
        assert (listed[agent.id]["online"], listed[agent.id]["load"]) == (True, len(chats))
    assert conversation_id in [c["conversation_id"] for c in alice.call("GET", "/chats").json()["chats"]]
    assert listed["chen"]["online"] is False
    moved = alice.call("POST", f"/conversations/{conversation_id}/transfer", json={"agent_id": "bob"})
    assert moved.status_code == 200 and moved.json()["handoff"]["agent_id"] == "bob"
    assert bob.wait_for(lambda f: f["type"] == "assigned")["handoff"]["conversation_id"] == conversation_id
    assert (
        alice.call(
            "POST", f"/conversations/{conversation_id}/messages", json={"text": "still me?"}
        ).status_code
        == 403
    )
    assert bob.call("POST", f"/conversations/{conversation_id}/resolve").status_code == 200


def test_with_nobody_online_the_customer_is_invited_to_leave_a_message_which_agents_see_later(
    agents, customer
):
    customer.send_raw(json.dumps({"type": "message", "text": "转人工", "client_message_id": "o1"}))
    frames = visitor_wait(customer, lambda f: f["type"] == "turn" and f["turn"]["sender"] == "system")
    assert "留言" in frames[-1]["turn"]["text"]
    customer.send_raw(
        json.dumps({"type": "message", "text": "我的订单少发了一件", "client_message_id": "o2"})
    )
    visitor_wait(customer, lambda f: f["type"] == "ack")
    waiting = agents["sam"].call("GET", "/queue").json()["waiting"]
    ticket = next(h for h in waiting if h["ticket"])
    package = agents["sam"].call("GET", f"/conversations/{ticket['conversation_id']}").json()
    assert "我的订单少发了一件" in [t["text"] for t in package["transcript"]]
    # An agent coming online gets it.
    alice = agents["alice"]
    alice.connect()
    alice.online()
    assigned = alice.wait_for(lambda f: f["type"] == "assigned" and f["handoff"]["id"] == ticket["id"])
    assert assigned["handoff"]["agent_id"] == "alice"
    assert alice.call("POST", f"/conversations/{ticket['conversation_id']}/resolve").status_code == 200


def test_stats_and_metrics_count_handoffs_by_reason(agents, customer):
    before = httpx.get(f"{customer.service.url}/api/v1/stats").json()
    customer.send_raw(json.dumps({"type": "message", "text": "转人工", "client_message_id": "s1"}))
    visitor_wait(customer, lambda f: f["type"] == "state" and f["state"] == "queued")
    after = httpx.get(f"{customer.service.url}/api/v1/stats").json()
    reason = "explicit_request"
    assert after["handoffs_by_reason"].get(reason, 0) == before["handoffs_by_reason"].get(reason, 0) + 1
    assert after["live"]["queue_length"] >= 1
    assert 0 <= after["automation_rate"] <= 1
    text = httpx.get(f"{customer.service.url}/metrics").text
    assert f'baton_handoffs_total{{reason="{reason}"}} {after["handoffs_by_reason"][reason]}' in text
    assert "baton_queue_length" in text
    # Close the waiting chat so later tests start from an empty queue.
    for waiting in agents["sam"].call("GET", "/queue").json()["waiting"]:
        assert (
            agents["sam"].call("POST", f"/conversations/{waiting['conversation_id']}/close").status_code
            == 200
        )
