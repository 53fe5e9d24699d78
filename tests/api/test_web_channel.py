"""The web chat WebSocket end to end: real `baton serve`, real Redis, real NLU on the tiny knowledge base."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.api.conftest import WAIT, WebVisitor, outcome, turns_in


def stored_turns(service, conversation_id: str) -> list[dict]:
    """The turns Redis holds for a conversation (the service's store, read directly)."""
    client = redis.Redis.from_url(service.redis_url, decode_responses=True)
    try:
        return [json.loads(t) for t in client.lrange(f"baton:conv:{conversation_id}:turns", 0, -1)]
    finally:
        client.close()


def conversation_state(service, conversation_id: str) -> str:
    client = redis.Redis.from_url(service.redis_url, decode_responses=True)
    try:
        return client.hget(f"baton:conv:{conversation_id}", "state")
    finally:
        client.close()


def test_english_question_gets_the_faq_answer_and_everything_is_stored(visitor, baton_service):
    hello = visitor.connect()
    assert hello == {"type": "hello", "conversation_id": None, "state": None}
    frames = visitor.say("how much is shipping?", "m-1")
    assert "typing" in [f["type"] for f in frames]
    ack = outcome(frames)
    assert ack["client_message_id"] == "m-1" and ack["seq"] == 1 and not ack["duplicate"]
    bot = turns_in(frames, "bot")
    assert [t["text"] for t in bot] == ["Shipping is free over 99 yuan."]
    stored = stored_turns(baton_service, ack["conversation_id"])
    assert [(t["sender"], t["text"]) for t in stored] == [
        ("customer", "how much is shipping?"),
        ("bot", "Shipping is free over 99 yuan."),
    ]
    assert stored[0]["nlu"]["intent"] == "faq/shipping_cost"  # the understanding is kept with the turn
    assert stored[0]["language"] == "en" and stored[1]["language"] == "en"


def test_chinese_question_is_answered_in_chinese(visitor):
    visitor.connect()
    bot = turns_in(visitor.say("退款多久到账"), "bot")
    assert [t["text"] for t in bot] == ["退款 1-3 天到账。"]
    assert bot[0]["language"] == "zh"


def test_order_status_asks_for_the_number_then_looks_it_up(visitor):
    visitor.connect()
    asked = turns_in(visitor.say("where is my order"), "bot")
    assert asked[0]["text"] == "What is your order number?"
    answered = turns_in(visitor.say("LM2024051234"), "bot")
    assert answered[0]["text"].startswith("Order LM2024051234: ")
    assert "{status}" not in answered[0]["text"]


def test_out_of_scope_falls_back_with_a_button_to_a_person(visitor, baton_service):
    visitor.connect()
    bot = turns_in(visitor.say("what is the weather tomorrow"), "bot")
    assert {"title": "Talk to a person", "payload": "/human_handoff"} in bot[0]["buttons"]
    frames = visitor.say("/human_handoff")
    assert turns_in(frames, "bot"), "the bot confirms the handoff"
    # Then the state change, and where the customer stands (nobody is online: leave a message).
    while not any(f["type"] == "turn" and f["turn"]["sender"] == "system" for f in frames):
        frames.append(visitor.frame())
    states = [f["state"] for f in frames if f["type"] == "state"]
    assert states == ["queued"]
    conversation_id = outcome(frames)["conversation_id"]
    assert conversation_state(baton_service, conversation_id) == "queued"
    # Queued: the message is stored (for the agent) and acknowledged, but the bot stays silent.
    silent = visitor.say("hello? anyone?")
    assert [f["type"] for f in silent] == ["ack", "turn"]
    assert turns_in(silent, "bot") == []
    assert stored_turns(baton_service, conversation_id)[-1]["text"] == "hello? anyone?"


def test_a_repeated_client_message_id_is_stored_and_answered_once(visitor, baton_service):
    visitor.connect()
    first = visitor.say("hi there", "same-id")
    again = visitor.say("hi there", "same-id")
    assert again == [{**outcome(first), "duplicate": True}]
    stored = stored_turns(baton_service, outcome(first)["conversation_id"])
    assert [t["sender"] for t in stored] == ["customer", "bot"]


@pytest.mark.parametrize(
    ("text", "code", "status"),
    [("", "empty", 400), ("   \n ", "empty", 400), ("x" * 4001, "too_long", 413)],
)
def test_bad_messages_get_a_clear_error_and_nothing_is_stored(visitor, baton_service, text, code, status):
    visitor.connect()
    frames = visitor.say(text, "bad-1")
    assert frames == [frames[0]] and frames[0]["type"] == "error"
    assert (frames[0]["code"], frames[0]["status"], frames[0]["client_message_id"]) == (code, status, "bad-1")
    assert frames[0]["message"]
    # Nothing was stored half-way: the visitor still has no conversation, and can go on.
    customer = httpx.post(f"{baton_service.url}/api/v1/web/session", json={"token": visitor.token})
    assert customer.json()["visitor_id"] == visitor.visitor_id
    assert turns_in(visitor.say("hello"), "bot")


def test_a_message_of_exactly_4000_characters_is_accepted(visitor):
    visitor.connect()
    assert outcome(visitor.say("好" * 4000))["type"] == "ack"


def test_malformed_frames_get_errors_and_the_connection_stays_open(visitor):
    visitor.connect()
    for raw, code in [
        ("not json", "invalid_json"),
        ("[1, 2]", "bad_frame"),
        ('{"type": "dance"}', "bad_frame"),
        ('{"type": "message", "text": 42}', "bad_request"),
        ('{"type": "message", "text": "hi", "client_message_id": 7}', "bad_frame"),
    ]:
        visitor.send_raw(raw)
        frame = visitor.frame()
        assert (frame["type"], frame["code"]) == ("error", code), raw
    visitor.send_raw('{"type": "ping"}')
    assert visitor.frame() == {"type": "pong"}


def test_html_is_stored_and_echoed_exactly_as_sent(visitor, baton_service):
    visitor.connect()
    text = '<script>alert("x")</script><img src=x onerror=alert(1)> & 你好'
    frames = visitor.say(text)
    echoed = turns_in(frames, "customer")
    assert echoed[0]["text"] == text
    assert stored_turns(baton_service, echoed[0]["conversation_id"])[0]["text"] == text


def test_bad_or_expired_tokens_are_refused_with_4401(baton_service):
    good = WebVisitor(baton_service)
    visitor_id, expires, signature = good.token.rsplit(".", 2)
    forged = f"{uuid.uuid4().hex}.{expires}.{signature}"  # someone else's id under this signature
    expired = f"{visitor_id}.1000.{signature}"
    for token in ["", "garbage", forged, expired]:
        with connect(f"{baton_service.ws_url}/ws/web?token={token}", open_timeout=WAIT) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=WAIT)
            assert closed.value.rcvd.code == 4401, token


def test_a_visitor_sees_only_its_own_conversation(baton_service):
    alice, bob = WebVisitor(baton_service), WebVisitor(baton_service)
    try:
        alice.connect()
        alice_frames = alice.say("my secret order LM2024051234")
        bob.connect(conversation=outcome(alice_frames)["conversation_id"], after=0)  # asks for Alice's
        assert bob.hello["conversation_id"] is None  # gets its own (none yet), not Alice's
        bob_frames = bob.say("hi")
        assert outcome(bob_frames)["conversation_id"] != outcome(alice_frames)["conversation_id"]
        texts = [t["text"] for t in turns_in(bob_frames)]
        assert not any("LM2024051234" in t for t in texts)
    finally:
        alice.close()
        bob.close()


def test_reconnecting_replays_only_missed_turns(baton_service):
    first = WebVisitor(baton_service)
    first.connect()
    frames = first.say("how much is shipping")
    conversation_id = outcome(frames)["conversation_id"]
    first.close()
    again = WebVisitor(baton_service, token=first.token)
    assert again.visitor_id == first.visitor_id
    hello = again.connect(conversation=conversation_id, after=1)
    assert hello["conversation_id"] == conversation_id and hello["state"] == "bot"
    replayed = again.drain_replay(1)
    assert replayed[0]["turn"]["seq"] == 2 and replayed[0]["turn"]["sender"] == "bot"
    with pytest.raises(TimeoutError):
        again.frame(timeout=1.0)  # nothing more: seq 1 is not sent twice
    again.close()


def test_too_many_messages_get_429_while_others_are_served(baton_service):
    busy, other = WebVisitor(baton_service), WebVisitor(baton_service)
    try:
        busy.connect()
        other.connect()
        # Sent at once, not one after the other's answer: a long chat hands over to a person after
        # 8 turns, and the bot's silence from then on must not stretch the burst past the window.
        for i in range(22):
            busy.send_raw(
                json.dumps({"type": "message", "text": f"hello {i}", "client_message_id": f"burst-{i}"})
            )
        firsts: list[dict] = []
        while len(firsts) < 22:
            frame = busy.frame()
            if frame["type"] in ("ack", "error"):
                firsts.append(frame)
        codes = [frame.get("code") or frame["type"] for frame in firsts]
        assert codes == ["ack"] * 20 + ["rate_limited"] * 2
        limited = outcome(busy.say("one more", "burst-x"))
        assert limited["status"] == 429 and 0 < limited["retry_after"] <= 10
        stored = stored_turns(baton_service, firsts[0]["conversation_id"])
        assert [t["text"] for t in stored if t["sender"] == "customer"] == [f"hello {i}" for i in range(20)]
        assert turns_in(other.say("how much is shipping"), "bot")  # everyone else is still served
    finally:
        busy.close()
        other.close()


def test_the_conversation_continues_after_the_service_restarts(baton_service):
    visitor = WebVisitor(baton_service)
    try:
        visitor.connect()
        before = visitor.say("where is my order")
        conversation_id = outcome(before)["conversation_id"]
        assert turns_in(before, "bot")[0]["text"] == "What is your order number?"
        baton_service.restart()
        hello = visitor.connect(conversation=conversation_id, after=2)
        assert hello["conversation_id"] == conversation_id
        # The slot question survived the restart: the bare number completes the order lookup.
        after = visitor.say("LM2024051234")
        assert outcome(after)["seq"] == 3
        assert turns_in(after, "bot")[0]["text"].startswith("Order LM2024051234: ")
    finally:
        visitor.close()


def test_visitor_tokens_stay_out_of_the_service_log(visitor, baton_service):
    visitor.connect()
    visitor.say("hello")
    log = baton_service.log_path.read_text(encoding="utf-8", errors="replace")
    assert "/ws/web?token=***" in log  # the connection is logged, its credential is not
    assert visitor.token not in log
    assert visitor.token.rsplit(".", 1)[1] not in log


def test_messages_sent_back_to_back_are_all_acknowledged_and_answered_in_order(visitor):
    visitor.connect()
    texts = ["how much is shipping", "退款多久到账", "hi there"]
    for i, text in enumerate(texts):
        visitor.send_raw(json.dumps({"type": "message", "text": text, "client_message_id": f"quick-{i}"}))
    frames = []
    while len(turns_in(frames, "bot")) < 3:
        frames.append(visitor.frame())
    acks = [f["client_message_id"] for f in frames if f["type"] == "ack"]
    assert acks == ["quick-0", "quick-1", "quick-2"]
    assert [t["text"] for t in turns_in(frames, "bot")] == [
        "Shipping is free over 99 yuan.",
        "退款 1-3 天到账。",
        "Hello!",
    ]
    seqs = [t["seq"] for t in turns_in(frames)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6  # every turn once, in order
    asked = {t["seq"]: t["client_message_id"] for t in turns_in(frames, "customer")}
    answered = [asked[t["reply_to"]] for t in turns_in(frames, "bot")]
    assert answered == ["quick-0", "quick-1", "quick-2"]  # each answer says which message it answers
