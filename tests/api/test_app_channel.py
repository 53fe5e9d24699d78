"""The mobile-app API end to end: real `baton serve` over HTTP, real Redis, real NLU."""

from __future__ import annotations

import json
import threading
import uuid

import httpx
import pytest

from tests.api.conftest import WAIT, ServiceProcess, app_headers, app_token


def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def send(
    client: httpx.Client, user_id: str, text: str, client_message_id: str | None = None
) -> httpx.Response:
    body = {"text": text, "client_message_id": client_message_id or uuid.uuid4().hex}
    return client.post("/api/v1/app/messages", json=body, headers=app_headers(user_id))


def test_a_message_is_answered_in_its_language(app_client):
    alice = user()
    english = send(app_client, alice, "how much is shipping?")
    assert english.status_code == 200, english.text
    body = english.json()
    assert body["message"]["text"] == "how much is shipping?" and body["message"]["sender"] == "customer"
    assert [r["text"] for r in body["replies"]] == ["Shipping is free over 99 yuan."]
    assert body["conversation"]["state"] == "bot" and not body["duplicate"]
    chinese = send(app_client, alice, "退款多久到账").json()
    assert [r["text"] for r in chinese["replies"]] == ["退款 1-3 天到账。"]
    assert chinese["conversation"]["id"] == body["conversation"]["id"]  # one conversation
    assert "nlu" not in chinese["message"]  # what the bot understood is for agents, not the app


def test_fetching_since_a_cursor_returns_only_newer_messages(app_client):
    bob = user()
    first = send(app_client, bob, "hi there").json()
    everything = app_client.get("/api/v1/app/messages", headers=app_headers(bob)).json()
    assert [m["sender"] for m in everything["messages"]] == ["customer", "bot"]
    assert everything["cursor"] == first["cursor"]
    send(app_client, bob, "how much is shipping")
    newer = app_client.get(
        "/api/v1/app/messages", params={"cursor": everything["cursor"]}, headers=app_headers(bob)
    ).json()
    assert [m["text"] for m in newer["messages"]] == [
        "how much is shipping",
        "Shipping is free over 99 yuan.",
    ]
    assert [m["seq"] for m in newer["messages"]] == [3, 4]
    idle = app_client.get(
        "/api/v1/app/messages", params={"cursor": newer["cursor"]}, headers=app_headers(bob)
    )
    assert idle.json()["messages"] == [] and idle.json()["cursor"] == newer["cursor"]


def test_a_retried_message_is_stored_and_answered_once(app_client):
    carol = user()
    first = send(app_client, carol, "how long does a refund take", "retry-1").json()
    again = send(app_client, carol, "how long does a refund take", "retry-1").json()
    assert again["duplicate"] and again["replies"] == []
    assert again["message"]["id"] == first["message"]["id"]
    history = app_client.get("/api/v1/app/messages", headers=app_headers(carol)).json()["messages"]
    assert len(history) == 2


def test_the_event_stream_delivers_the_bot_reply(baton_service, app_client):
    dave = user()
    cursor = send(app_client, dave, "hello").json()["cursor"]
    events: list[tuple[str, dict]] = []
    opened = threading.Event()

    def listen() -> None:
        headers = app_headers(dave)
        with httpx.stream(
            "GET",
            f"{baton_service.url}/api/v1/app/stream",
            params={"cursor": cursor},
            headers=headers,
            timeout=WAIT,
        ) as stream:
            opened.set()
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind:
                    events.append((kind, json.loads(line.removeprefix("data: "))))
                    if kind == "turn" and events[-1][1]["sender"] == "bot":
                        return

    listener = threading.Thread(target=listen)
    listener.start()
    assert opened.wait(WAIT)
    send(app_client, dave, "how much is shipping")
    listener.join(WAIT)
    assert not listener.is_alive()
    assert [(k, e["text"]) for k, e in events] == [
        ("turn", "how much is shipping"),
        ("turn", "Shipping is free over 99 yuan."),
    ]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Baton-App-Key": ServiceProcess.APP_KEY},
        {"X-Baton-App-Key": "wrong-key", "Authorization": f"Bearer {app_token('eve')}"},
        {"X-Baton-App-Key": ServiceProcess.APP_KEY, "Authorization": f"Bearer {app_token('eve', ttl=-10)}"},
        {
            "X-Baton-App-Key": ServiceProcess.APP_KEY,
            "Authorization": f"Bearer {app_token('eve', secret='not-it')}",
        },
        {"X-Baton-App-Key": ServiceProcess.APP_KEY, "Authorization": "Bearer eve.99999999999.abc"},
        {"X-Baton-App-Key": ServiceProcess.APP_KEY, "Authorization": f"Basic {app_token('eve')}"},
    ],
    ids=["nothing", "no-token", "wrong-app-key", "expired", "wrong-secret", "forged", "not-bearer"],
)
def test_bad_credentials_get_401_and_nothing_is_stored(app_client, headers):
    answer = app_client.post("/api/v1/app/messages", json={"text": "hi"}, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized" and answer.json()["error"]["message"]
    # 'eve' never got in, so she has no conversation.
    history = app_client.get("/api/v1/app/messages", headers=app_headers("eve")).json()
    assert history["messages"] == []


def test_one_user_cannot_read_another_users_conversation(app_client):
    frank, grace = user(), user()
    franks = send(app_client, frank, "where is my order LM2024051234").json()
    conversation_id = franks["conversation"]["id"]
    mine = app_client.get(f"/api/v1/app/conversations/{conversation_id}", headers=app_headers(frank))
    assert mine.status_code == 200 and mine.json()["messages"][0]["text"].endswith("LM2024051234")
    for path, params in [
        (f"/api/v1/app/conversations/{conversation_id}", {}),
        ("/api/v1/app/messages", {"cursor": franks["cursor"]}),
        ("/api/v1/app/stream", {"cursor": franks["cursor"]}),
    ]:
        answer = app_client.get(path, params=params, headers=app_headers(grace))
        assert answer.status_code == 403, path
        assert "LM2024051234" not in answer.text
    unknown = app_client.get(f"/api/v1/app/conversations/{uuid.uuid4().hex}", headers=app_headers(grace))
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b'{"text": "hi"', 400, "invalid_json"),
        (b'{"message": "hi"}', 400, "bad_request"),
        (b'{"text": ""}', 400, "empty"),
        (json.dumps({"text": "x" * 4001}).encode(), 413, "too_long"),
        (json.dumps({"text": "x" * 70000}).encode(), 413, "too_large"),
    ],
    ids=["invalid-json", "no-text", "empty", "over-4000", "over-64k"],
)
def test_bad_bodies_get_clear_errors_and_nothing_is_stored(app_client, content, status, code):
    henry = user()
    headers = {**app_headers(henry), "Content-Type": "application/json"}
    answer = app_client.post("/api/v1/app/messages", content=content, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    assert app_client.get("/api/v1/app/messages", headers=app_headers(henry)).json()["messages"] == []


def test_a_bad_cursor_is_refused(app_client):
    answer = app_client.get(
        "/api/v1/app/messages", params={"cursor": "nonsense"}, headers=app_headers(user())
    )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_cursor"


def test_rate_limit_answers_429_with_retry_after(app_client):
    ivy = user()
    statuses = [send(app_client, ivy, f"hello {i}").status_code for i in range(21)]
    assert statuses == [200] * 20 + [429]
    limited = send(app_client, ivy, "again")
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 10
    history = app_client.get("/api/v1/app/messages", params={"limit": 100}, headers=app_headers(ivy)).json()
    assert "again" not in [m["text"] for m in history["messages"]]
    assert send(app_client, user(), "hi").status_code == 200  # others are still served


def test_healthz_and_the_api_docs(app_client):
    health = app_client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    schema = app_client.get("/openapi.json").json()
    assert {"/api/v1/app/messages", "/api/v1/app/stream", "/api/v1/web/session"} <= set(schema["paths"])


def backend_headers(secret: str = ServiceProcess.APP_SECRET) -> dict[str, str]:
    return {"X-Baton-App-Key": ServiceProcess.APP_KEY, "Authorization": f"Bearer {secret}"}


def test_a_verified_phone_joins_web_and_app_history(baton_service, app_client):
    from tests.api.conftest import WebVisitor, outcome

    phone = f"+861380{uuid.uuid4().int % 10**7:07d}"
    visitor = WebVisitor(baton_service)
    try:
        visitor.connect()
        web_conversation = outcome(visitor.say("how much is shipping"))["conversation_id"]
    finally:
        visitor.close()
    jack = user()
    send(app_client, jack, "hello")
    links = []
    for channel, external_id in [("app", jack), ("web", visitor.visitor_id)]:
        body = {"channel": channel, "external_id": external_id, "kind": "phone", "value": phone}
        answer = app_client.post("/api/v1/backend/links", json=body, headers=backend_headers())
        assert answer.status_code == 200, answer.text
        links.append(answer.json())
    assert links[1]["customer_id"] == links[0]["customer_id"] and links[1]["merged"]
    assert {(i["channel"], i["external_id"]) for i in links[1]["identities"]} == {
        ("app", jack),
        ("web", visitor.visitor_id),
    }
    # The app user now reaches the conversation they had on the web.
    answer = app_client.get(f"/api/v1/app/conversations/{web_conversation}", headers=app_headers(jack))
    assert answer.status_code == 200
    assert answer.json()["messages"][0]["text"] == "how much is shipping"


def test_the_backend_api_needs_the_secret_and_a_real_phone(app_client):
    body = {"channel": "app", "external_id": user(), "kind": "phone", "value": "+8613800138000"}
    for headers in [{}, backend_headers("wrong"), {"Authorization": f"Bearer {ServiceProcess.APP_SECRET}"}]:
        assert app_client.post("/api/v1/backend/links", json=body, headers=headers).status_code == 401
    # A user token is not the secret: an app cannot link phones on its own say-so.
    user_headers = app_headers(body["external_id"])
    assert app_client.post("/api/v1/backend/links", json=body, headers=user_headers).status_code == 401
    for bad in [{**body, "value": "13800138000"}, {**body, "kind": "email"}, {**body, "channel": "fax"}]:
        answer = app_client.post("/api/v1/backend/links", json=bad, headers=backend_headers())
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_request"
