"""The Rasa bridge end to end: `baton serve` with BATON_RASA_ACTIONS_TOKEN set, called over HTTP the
way the custom actions in bot/rasa/actions call it, checked through the agent API, the web chat
and the app API. Every test uses a fresh Rasa sender id, so tests do not see each other's chats.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from handoff.signals import REASONS
from tests.api.conftest import WAIT, Agent, WebVisitor, app_headers, clear_desk
from tests.conftest import TINY_KB, ServiceProcess

TOKEN = "rasa-actions-test-token-0123456789"
PREFIX = "rasa-bridge:"
NOBODY_ONLINE_EN = "No one from our team is online right now."
NOBODY_ONLINE_ZH = "现在暂时没有客服在线。"


@pytest.fixture(scope="module")
def rasa_on(baton_service, redis_server, tmp_path_factory) -> Iterator[ServiceProcess]:
    """A service with the Rasa API on (its own Redis database and prefix; the shared model)."""
    service = ServiceProcess(
        TINY_KB,
        tmp_path_factory.mktemp("rasa-bridge"),
        redis_server.url.rsplit("/", 1)[0] + "/4",
        model_dir=baton_service.model_dir,
        env={"BATON_RASA_ACTIONS_TOKEN": TOKEN, "BATON_REDIS_PREFIX": PREFIX},
    )
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def supervisor(rasa_on) -> Agent:
    """Sam, who sees every queue and conversation."""
    return Agent(rasa_on, "sam")


def call(
    service: ServiceProcess, path: str, body: dict[str, Any], token: str | None = TOKEN
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(f"{service.url}/api/v1/rasa{path}", json=body, headers=headers, timeout=WAIT)


def sender() -> str:
    return f"rasa-user-{uuid.uuid4().hex[:10]}"


def user(text: str, at: float, intent: str | None = None, **entities: str) -> dict[str, Any]:
    """A Rasa user event as the tracker holds it (with Rasa's extra fields, which Baton ignores)."""
    event: dict[str, Any] = {"event": "user", "text": text, "timestamp": at, "input_channel": "rest"}
    if intent is not None:
        event["parse_data"] = {
            "intent": {"name": intent, "confidence": 0.93},
            "entities": [
                {"entity": k, "value": v, "extractor": "RegexEntityExtractor"} for k, v in entities.items()
            ],
            "intent_ranking": [{"name": intent, "confidence": 0.93}],
            "text": text,
        }
    return event


def bot(text: str, at: float) -> dict[str, Any]:
    return {
        "event": "bot",
        "text": text,
        "timestamp": at,
        "data": {},
        "metadata": {"utter_action": "utter_x"},
    }


def conversation_events() -> list[dict[str, Any]]:
    """Greeting, an order question answered by Rasa, then a request for a person, with Rasa's other events."""
    return [
        {"event": "action", "name": "action_session_start", "timestamp": 1700000000.0},
        {"event": "session_started", "timestamp": 1700000000.1},
        user("hello", 1700000001.0, "greet"),
        {"event": "action", "name": "utter_greet", "timestamp": 1700000001.2},
        bot("Hi! How can I help?", 1700000001.3),
        user("where is my order LM2024051234", 1700000010.0, "order_status", order_number="LM2024051234"),
        {"event": "slot", "name": "order_number", "value": "LM2024051234", "timestamp": 1700000010.1},
        bot("It left our warehouse yesterday.", 1700000010.5),
        user("I want to talk to a person", 1700000020.0, "human_handoff"),
        {"event": "action", "name": "action_baton_handoff", "timestamp": 1700000020.2},
    ]


def waiting_for(agent: Agent, conversation_id: str) -> list[dict[str, Any]]:
    return [
        h for h in agent.call("GET", "/queue").json()["waiting"] if h["conversation_id"] == conversation_id
    ]


def transcript(agent: Agent, conversation_id: str) -> list[tuple[str, str]]:
    package = agent.call("GET", f"/conversations/{conversation_id}")
    assert package.status_code == 200, package.text
    return [(t["sender"], t["text"]) for t in package.json()["transcript"]]


# -- access ------------------------------------------------------------------------------------


def test_the_api_is_off_without_a_token_setting(baton_service):
    for path, body in (("/answer", {"text": "hi"}), ("/handoff", {"sender_id": sender()})):
        answer = call(baton_service, path, body, token="anything")
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["code"] == "rasa_disabled" and "BATON_RASA_ACTIONS_TOKEN" in error["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
    ],
    ids=["missing", "wrong", "no-scheme", "basic"],
)
def test_a_missing_or_wrong_token_is_refused(rasa_on, supervisor, headers):
    name = sender()
    for path, body in (("/answer", {"text": "how much is shipping"}), ("/handoff", {"sender_id": name})):
        answer = httpx.post(f"{rasa_on.url}/api/v1/rasa{path}", json=body, headers=headers, timeout=WAIT)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "unauthorized"
    # The refused handoff stored nothing: the same call with the token imports and queues afresh.
    first = call(rasa_on, "/handoff", {"sender_id": name, "events": [user("help", 1.0)]}).json()
    assert first["queued"] and first["imported"] == {"customer": 1, "bot": 0}


# -- handoff -----------------------------------------------------------------------------------


def test_a_handoff_imports_the_transcript_in_order_and_queues_the_conversation(rasa_on, supervisor):
    name = sender()
    answer = call(rasa_on, "/handoff", {"sender_id": name, "events": conversation_events()})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["queued"] and body["state"] == "queued"
    assert body["reasons"] == ["explicit_request"] and body["language"] == "en"
    assert body["imported"] == {"customer": 3, "bot": 2}
    assert body["notice"].startswith(NOBODY_ONLINE_EN)  # nobody is online in this service
    assert body["visitor_id"] == f"rasa-{name}" and body["token"] and body["expires_in"] > 0
    conversation_id = body["conversation_id"]
    assert transcript(supervisor, conversation_id) == [
        ("customer", "hello"),
        ("bot", "Hi! How can I help?"),
        ("customer", "where is my order LM2024051234"),
        ("bot", "It left our warehouse yesterday."),
        ("customer", "I want to talk to a person"),
        ("system", body["notice"]),
    ]
    [waiting] = waiting_for(supervisor, conversation_id)
    assert waiting["id"] == body["handoff_id"] and waiting["reasons"] == ["explicit_request"]
    assert waiting["skill"] == "logistics"  # routed by the order question, not by "a person please"
    package = supervisor.call("GET", f"/conversations/{conversation_id}").json()
    assert [step["intent"] for step in package["trace"]] == ["greet", "order_status", "human_handoff"]
    assert package["customer"]["identities"] == [{"channel": "web", "external_id": f"rasa-{name}"}]


def test_calling_again_adds_no_turn_and_no_second_queue_entry(rasa_on, supervisor):
    name = sender()
    events = conversation_events()
    first = call(rasa_on, "/handoff", {"sender_id": name, "events": events}).json()
    before = transcript(supervisor, first["conversation_id"])
    again = call(rasa_on, "/handoff", {"sender_id": name, "events": events})
    assert again.status_code == 200, again.text
    second = again.json()
    assert not second["queued"] and second["imported"] == {"customer": 0, "bot": 0}
    assert (
        second["conversation_id"] == first["conversation_id"] and second["handoff_id"] == first["handoff_id"]
    )
    assert second["notice"] == first["notice"] and second["state"] == "queued"
    assert transcript(supervisor, first["conversation_id"]) == before
    assert len(waiting_for(supervisor, first["conversation_id"])) == 1
    # A longer tracker (the customer wrote again while Rasa was paused): only the new message is added.
    later = [*events, bot("One moment.", 1700000021.0), user("are you there?", 1700000030.0)]
    third = call(rasa_on, "/handoff", {"sender_id": name, "events": later}).json()
    assert third["imported"] == {"customer": 1, "bot": 0}  # a person has it: the bot's words are not kept
    assert transcript(supervisor, first["conversation_id"]) == [*before, ("customer", "are you there?")]
    assert len(waiting_for(supervisor, first["conversation_id"])) == 1


def test_two_simultaneous_calls_queue_the_conversation_once(rasa_on, supervisor):
    name = sender()
    body = {"sender_id": name, "events": conversation_events()}
    answers: list[dict[str, Any]] = []

    def post() -> None:
        answers.append(call(rasa_on, "/handoff", body).json())

    threads = [threading.Thread(target=post) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a["queued"] for a in answers) == [False, False, True]
    assert len({a["handoff_id"] for a in answers}) == 1
    assert (
        sum(a["imported"]["customer"] for a in answers) == 3
        and sum(a["imported"]["bot"] for a in answers) == 2
    )
    assert len(transcript(supervisor, answers[0]["conversation_id"])) == 6
    assert len(waiting_for(supervisor, answers[0]["conversation_id"])) == 1


def test_an_unknown_reason_is_refused_and_nothing_is_stored(rasa_on, supervisor):
    name = sender()
    events = conversation_events()
    refused = call(rasa_on, "/handoff", {"sender_id": name, "reason": "bored", "events": events})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "unknown_reason" and all(reason in error["message"] for reason in REASONS)
    # Nothing was imported or queued by the refused call: this one does all of it.
    accepted = call(rasa_on, "/handoff", {"sender_id": name, "events": events}).json()
    assert accepted["queued"] and accepted["imported"] == {"customer": 3, "bot": 2}


def test_the_reason_and_its_severity_reach_the_queue(rasa_on, supervisor):
    events = [user("this is useless, I am furious", 1700000001.0, "complaint")]
    body = call(
        rasa_on, "/handoff", {"sender_id": sender(), "reason": "negative_sentiment", "events": events}
    )
    assert body.status_code == 200, body.text
    [waiting] = waiting_for(supervisor, body.json()["conversation_id"])
    assert waiting["reasons"] == ["negative_sentiment"] and waiting["severity"] == 3


def test_the_language_is_guessed_from_the_customer_or_taken_as_given(rasa_on):
    chinese = [user("我的快递怎么还没到", 1.0), bot("Let me check.", 2.0), user("转人工", 3.0)]
    guessed = call(rasa_on, "/handoff", {"sender_id": sender(), "events": chinese}).json()
    assert guessed["language"] == "zh" and guessed["notice"].startswith(NOBODY_ONLINE_ZH)
    given = call(rasa_on, "/handoff", {"sender_id": sender(), "events": chinese, "language": "en"}).json()
    assert given["language"] == "en" and given["notice"].startswith(NOBODY_ONLINE_EN)


def test_the_token_lets_the_web_chat_continue_the_same_conversation(rasa_on):
    name = sender()
    body = call(rasa_on, "/handoff", {"sender_id": name, "events": conversation_events()}).json()
    session = httpx.post(f"{rasa_on.url}/api/v1/web/session", json={"token": body["token"]}, timeout=WAIT)
    assert session.json()["visitor_id"] == body["visitor_id"] == f"rasa-{name}"  # kept, not a new visitor
    widget = WebVisitor(rasa_on, token=body["token"])
    try:
        hello = widget.connect(conversation=body["conversation_id"])
        assert hello["conversation_id"] == body["conversation_id"] and hello["state"] == "queued"
        replayed = widget.drain_replay(6)
        assert [f["turn"]["text"] for f in replayed][:2] == ["hello", "Hi! How can I help?"]
    finally:
        widget.close()


def test_a_customer_named_by_the_caller_gets_the_conversation_and_no_web_token(rasa_on):
    app_user = f"app-{uuid.uuid4().hex[:8]}"
    body = call(
        rasa_on,
        "/handoff",
        {
            "sender_id": app_user,
            "events": conversation_events(),
            "customer": {"channel": "app", "external_id": app_user},
        },
    ).json()
    assert body["queued"] and body["token"] is None and body["visitor_id"] is None
    history = httpx.get(
        f"{rasa_on.url}/api/v1/app/messages", headers=app_headers(app_user), timeout=WAIT
    ).json()
    assert (
        history["conversation"]["id"] == body["conversation_id"]
        and history["conversation"]["channel"] == "app"
    )
    assert [m["text"] for m in history["messages"]][:3] == [
        "hello",
        "Hi! How can I help?",
        "where is my order LM2024051234",
    ]


def test_an_agent_online_takes_the_chat_at_once_and_the_notice_says_so(rasa_on):
    clear_desk(rasa_on)  # earlier tests' chats would fill Alice first
    alice = Agent(rasa_on, "alice")
    alice.online()
    try:
        body = call(rasa_on, "/handoff", {"sender_id": sender(), "events": conversation_events()}).json()
        assert body["queued"] and body["state"] == "assigned"
        assert body["notice"] == "Alice from our team has joined the chat."
    finally:
        for chat in alice.call("GET", "/chats").json()["chats"]:
            alice.call("POST", f"/conversations/{chat['conversation_id']}/resolve")
        alice.online(False)


def test_after_a_hand_back_a_second_handoff_imports_only_what_is_new(rasa_on, supervisor):
    clear_desk(rasa_on)
    alice = Agent(rasa_on, "alice")
    alice.online()
    name = sender()
    events = conversation_events()
    try:
        first = call(rasa_on, "/handoff", {"sender_id": name, "events": events}).json()
        assert first["state"] == "assigned"
        back = alice.call("POST", f"/conversations/{first['conversation_id']}/handback")
        assert back.status_code == 200, back.text
        # Rasa resumed, answered once more, and the customer asks for a person again: the whole tracker comes.
        later = [*events, bot("Anything else?", 1700000100.0), user("a person again please", 1700000110.0)]
        second = call(rasa_on, "/handoff", {"sender_id": name, "events": later}).json()
        assert second["queued"] and second["imported"] == {"customer": 1, "bot": 1}
        assert (
            second["conversation_id"] == first["conversation_id"]
            and second["handoff_id"] != first["handoff_id"]
        )
        texts = [text for _, text in transcript(supervisor, first["conversation_id"])]
        assert texts.count("Hi! How can I help?") == 1 and texts.count("hello") == 1
        assert texts.index("Anything else?") < texts.index("a person again please")
    finally:
        for chat in alice.call("GET", "/chats").json()["chats"]:
            alice.call("POST", f"/conversations/{chat['conversation_id']}/resolve")
        alice.online(False)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"sender_id": ""},
        {"sender_id": "x" * 191},
        {"sender_id": "a\nb"},
        {"sender_id": "ok", "language": "fr"},
        {"sender_id": "ok", "events": [{"event": "user", "text": "x" * 4001}]},
        {"sender_id": "ok", "customer": {"channel": "fax", "external_id": "1"}},
        {"sender_id": "ok", "surprise": True},
    ],
    ids=[
        "no-sender",
        "empty-sender",
        "long-sender",
        "control-char",
        "language",
        "long-text",
        "channel",
        "extra",
    ],
)
def test_a_malformed_handoff_is_a_clear_400(rasa_on, body):
    answer = call(rasa_on, "/handoff", body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "bad_request"


# -- knowledge answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "language"),
    [
        ("how long does my refund take to arrive?", "Refunds arrive in 1-3 days.", "en"),
        ("退款一般几天能到账", "退款 1-3 天到账。", "zh"),
        ("do I have to pay for delivery", "Shipping is free over 99 yuan.", "en"),
    ],
)
def test_a_knowledge_question_gets_the_faq_answer_in_its_language(rasa_on, text, expected, language):
    answer = call(rasa_on, "/answer", {"text": text})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["answer"] == expected and body["language"] == language
    assert body["source"] == "faq" and body["intent"].startswith("faq/") and body["article_id"] is None
    assert 0 < body["confidence"] <= 1


@pytest.mark.parametrize(
    ("text", "article_id", "language", "passage"),
    [
        ("智能音箱怎么连接手机", "speaker-pairing", "zh", "选择 Lumo Speaker"),
        ("how should I wash my wool sweater", "caring-for-wool", "en", "by hand in cold water"),
    ],
)
def test_a_question_an_article_answers_gets_its_passage(rasa_on, text, article_id, language, passage):
    body = call(rasa_on, "/answer", {"text": text}).json()
    assert body["source"] == "article" and body["article_id"] == article_id, body
    assert body["language"] == language and passage in body["answer"]


@pytest.mark.parametrize("text", ["who will win the election next year?", "帮我订一张明天去上海的机票"])
def test_an_out_of_scope_message_has_no_answer(rasa_on, text):
    body = call(rasa_on, "/answer", {"text": text}).json()
    assert body["answer"] is None and body["source"] is None and body["article_id"] is None
    assert body["intent"] in ("out_of_scope", "nlu_fallback")


def test_small_talk_and_requests_for_a_person_are_not_knowledge(rasa_on):
    for text in ("hello", "I want to talk to a person", "where is my order"):
        body = call(rasa_on, "/answer", {"text": text}).json()
        assert body["answer"] is None, (text, body)


def test_the_given_language_answers_a_message_that_shows_none(rasa_on):
    payload = {"text": "/faq/shipping_cost", "language": "zh"}  # a button press says nothing of the language
    assert call(rasa_on, "/answer", payload).json()["answer"] == "满 99 元包邮。"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"text": ""}, 400, "empty"),
        ({"text": "   "}, 400, "empty"),
        ({"text": "x" * 4001}, 413, "too_long"),
        ({}, 400, "bad_request"),
        ({"text": "hi", "language": "de"}, 400, "bad_request"),
    ],
    ids=["empty", "spaces", "too-long", "missing", "language"],
)
def test_a_bad_answer_request_is_a_clear_4xx(rasa_on, body, status, code):
    answer = call(rasa_on, "/answer", body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
