"""The WeChat channel end to end: `baton serve` with the channel on, its real HTTP callback, and a
stand-in of WeChat's API on loopback (tests/api/wechat_fake.py) for what goes out.

Two services share the stand-in and a Redis (each with its own key prefix): ``wechat`` answers
passively when the bot is quick (the budget is the default 4 s), ``slow`` has a budget too
short for any answer, so every reply goes through the customer-service API. Every follower is
a fresh openid, so tests do not see each other's messages.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from api.channels.wechat import WeChatConfig
from api.channels.wechat_crypto import MessageCipher, signature
from api.channels.wechat_xml import cdata, parse
from api.settings import Settings
from conversations.store import ConversationStore
from tests.api.conftest import WAIT, Agent, WebVisitor, clear_desk
from tests.api.wechat_fake import FakeWeChatApi
from tests.conftest import TINY_KB, ServiceProcess

TOKEN = "baton-wechat-test-token"
APP_ID = "wx0000000000000001"
SECRET = "fake-app-secret"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
PREVIOUS_AES_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlk0"
ACCOUNT = "gh_baton_test"


@pytest.fixture(scope="module")
def wechat_api() -> Iterator[FakeWeChatApi]:
    with FakeWeChatApi(APP_ID, SECRET) as api:
        yield api


def _start(
    baton_service: ServiceProcess, redis_server: Any, folder: Any, prefix: str, **env: str
) -> ServiceProcess:
    service = ServiceProcess(
        TINY_KB,
        folder,
        redis_server.url.rsplit("/", 1)[0] + "/3",
        model_dir=baton_service.model_dir,
        env={
            "BATON_REDIS_PREFIX": prefix,
            "BATON_WECHAT_TOKEN": TOKEN,
            "BATON_WECHAT_APP_ID": APP_ID,
            "BATON_WECHAT_APP_SECRET": SECRET,
            "BATON_WECHAT_AES_KEY": AES_KEY,
            "BATON_WECHAT_PREVIOUS_AES_KEY": PREVIOUS_AES_KEY,
            **env,
        },
    )
    service.start()
    service.prefix = prefix  # type: ignore[attr-defined]
    return service


@pytest.fixture(scope="module")
def wechat(baton_service, redis_server, tmp_path_factory, wechat_api) -> Iterator[ServiceProcess]:
    """The channel with the default passive-reply budget."""
    service = _start(
        baton_service, redis_server, tmp_path_factory.mktemp("wechat"), "wx-fast:",
        BATON_WECHAT_API_BASE=wechat_api.base_url,
    )  # fmt: skip
    yield service
    service.stop()


@pytest.fixture(scope="module")
def slow(baton_service, redis_server, tmp_path_factory, wechat_api) -> Iterator[ServiceProcess]:
    """The channel with a budget no bot answer meets: replies go through the customer-service API."""
    service = _start(
        baton_service, redis_server, tmp_path_factory.mktemp("wechat-slow"), "wx-slow:",
        BATON_WECHAT_API_BASE=wechat_api.base_url, BATON_WECHAT_REPLY_SECONDS="0.001",
    )  # fmt: skip
    yield service
    service.stop()


class Follower:
    """A WeChat follower, as WeChat's servers present them to the callback URL."""

    def __init__(self, service: ServiceProcess) -> None:
        self.service = service
        self.openid = f"o{uuid.uuid4().hex[:27]}"
        self.url = f"{service.url}/channels/wechat"

    def message(self, msg_type: str = "text", msg_id: str | None = None, **fields: str) -> str:
        """The XML WeChat posts for a message (``fields`` become elements, as CDATA)."""
        created = str(int(time.time()))
        parts = [
            f"<ToUserName>{cdata(ACCOUNT)}</ToUserName>",
            f"<FromUserName>{cdata(self.openid)}</FromUserName>",
        ]
        parts += [f"<CreateTime>{created}</CreateTime>", f"<MsgType>{cdata(msg_type)}</MsgType>"]
        parts += [f"<{name}>{cdata(value)}</{name}>" for name, value in fields.items()]
        if msg_type != "event":
            parts.append(f"<MsgId>{msg_id or str(uuid.uuid4().int)[:19]}</MsgId>")
        return "<xml>" + "".join(parts) + "</xml>"

    def post(self, body: str | bytes, *, timestamp: str | None = None, sign: bool = True) -> httpx.Response:
        """POST ``body`` in plaintext mode, signed as WeChat signs it."""
        timestamp = timestamp or str(int(time.time()))
        nonce = uuid.uuid4().hex[:10]
        params = {"timestamp": timestamp, "nonce": nonce, "openid": self.openid}
        if sign:
            params["signature"] = signature(TOKEN, timestamp, nonce)
        content = body.encode() if isinstance(body, str) else body
        return httpx.post(self.url, params=params, content=content, timeout=WAIT)

    def post_encrypted(
        self, body: str, key: str = AES_KEY, app_id: str = APP_ID, **tamper: str
    ) -> httpx.Response:
        """POST ``body`` in safe mode (``encrypt_type=aes``), encrypted with ``key`` for ``app_id``."""
        timestamp, nonce = str(int(time.time())), uuid.uuid4().hex[:10]
        encrypted = tamper.get("encrypt") or MessageCipher(key, app_id).encrypt(body)
        params = {
            "timestamp": timestamp,
            "nonce": nonce,
            "openid": self.openid,
            "encrypt_type": "aes",
            "signature": signature(TOKEN, timestamp, nonce),
            "msg_signature": tamper.get("msg_signature") or signature(TOKEN, timestamp, nonce, encrypted),
        }
        envelope = (
            f"<xml><ToUserName>{cdata(ACCOUNT)}</ToUserName><Encrypt>{cdata(encrypted)}</Encrypt></xml>"
        )
        return httpx.post(self.url, params=params, content=envelope.encode(), timeout=WAIT)

    def say(self, text: str, **kw: str) -> httpx.Response:
        return self.post(self.message("text", Content=text, **kw))


def passive_text(answer: httpx.Response) -> str:
    """The text of a passive reply (plaintext)."""
    assert answer.status_code == 200, answer.text
    fields = parse(answer.content)
    assert fields["MsgType"] == "text"
    return fields["Content"]


def sent_to(
    api: FakeWeChatApi, openid: str, count: int, including: str | None = None, timeout: float = WAIT
) -> list[str]:
    """The texts WeChat accepted for ``openid``, once there are ``count`` of them (and ``including``
    is one of them, if given); bounded wait."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        texts = [m.content for m in list(api.sent) if m.openid == openid]
        if len(texts) >= count and (including is None or including in texts):
            return texts
        time.sleep(0.05)
    got = [m.content for m in api.sent if m.openid == openid]
    raise AssertionError(f"{count} messages (with {including!r}) expected for {openid}, got {got}")


def customer_turns(service: ServiceProcess, openid: str) -> list[tuple[str, str]]:
    """(sender, text) of the follower's latest conversation, read from Redis."""

    async def read() -> list[tuple[str, str]]:
        client = Redis.from_url(service.redis_url, decode_responses=True)
        try:
            store = ConversationStore(client, prefix=service.prefix)  # type: ignore[attr-defined]
            customer = await store.resolve_customer("wechat", openid)
            conversation = await store.latest_conversation(customer.id)
            if conversation is None:
                return []
            return [(t.sender, t.text) for t in await store.turns(conversation.id, limit=1000)]
        finally:
            await client.aclose()

    return asyncio.run(read())


def routed_chat(agent: Agent) -> str:
    """The conversation id of the first chat routed to ``agent`` (bounded wait)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        chats = agent.call("GET", "/chats").json()["chats"]
        if chats:
            return chats[0]["conversation_id"]
        time.sleep(0.1)
    raise AssertionError(f"no chat was routed to {agent.id}")


@pytest.fixture
def desk(wechat: ServiceProcess, slow: ServiceProcess) -> Iterator[None]:
    """Agents offline and no chat left over, before and after."""
    for service in (wechat, slow):
        clear_desk(service)
    yield
    for service in (wechat, slow):
        clear_desk(service)


# -- the URL check and plaintext / safe mode round trips -------------------------------------------


def test_wechat_checks_the_url_with_a_signed_echo(wechat: ServiceProcess) -> None:
    url, timestamp, nonce = f"{wechat.url}/channels/wechat", str(int(time.time())), "93124"
    good = {
        "signature": signature(TOKEN, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "echostr": "e-123",
    }
    answer = httpx.get(url, params=good)
    assert answer.status_code == 200 and answer.text == "e-123"
    for bad in (
        {**good, "signature": "0" * 40},
        {k: v for k, v in good.items() if k != "signature"},
        {
            **good,
            "timestamp": str(int(time.time()) - 301),
            "signature": signature(TOKEN, str(int(time.time()) - 301), nonce),
        },
    ):
        refused = httpx.get(url, params=bad)
        assert refused.status_code == 403 and "e-123" not in refused.text


def test_a_quick_answer_goes_back_in_the_callback_reply(
    wechat: ServiceProcess, wechat_api: FakeWeChatApi
) -> None:
    follower = Follower(wechat)
    answer = follower.say("how much is shipping?")
    fields = parse(answer.content)
    assert fields["ToUserName"] == follower.openid and fields["FromUserName"] == ACCOUNT
    assert "shipping" in fields["Content"].lower() or "运费" in fields["Content"]
    assert customer_turns(wechat, follower.openid)[0] == ("customer", "how much is shipping?")
    time.sleep(1.5)  # longer than the outbox holds a reply for the callback
    assert [m for m in wechat_api.sent if m.openid == follower.openid] == []  # sent once, passively


def test_safe_mode_decrypts_the_message_and_encrypts_the_reply_also_with_the_previous_key(
    wechat: ServiceProcess,
) -> None:
    for key in (AES_KEY, PREVIOUS_AES_KEY):
        follower = Follower(wechat)
        answer = follower.post_encrypted(follower.message("text", Content="退款多久到账"), key=key)
        assert answer.status_code == 200, answer.text
        envelope = parse(answer.content)
        expected = signature(TOKEN, envelope["TimeStamp"], envelope["Nonce"], envelope["Encrypt"])
        assert envelope["MsgSignature"] == expected
        reply = parse(MessageCipher(key, APP_ID).decrypt(envelope["Encrypt"]).encode())
        assert reply["ToUserName"] == follower.openid and reply["Content"]
        assert "退款" in reply["Content"] or "refund" in reply["Content"].lower()


# -- bad input --------------------------------------------------------------------------------------


def test_bad_requests_are_refused_and_nothing_is_processed(
    wechat: ServiceProcess, wechat_api: FakeWeChatApi
) -> None:
    follower = Follower(wechat)
    body = follower.message("text", Content="how much is shipping?")
    stale = str(int(time.time()) - 600)
    bomb = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><xml><Content>&b;</Content></xml>'
    external = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Content>&e;</Content></xml>'
    cases = [
        (follower.post(body, sign=False), 403),
        (follower.post(body, timestamp=stale), 403),
        (follower.post(bomb), 400),
        (follower.post(external), 400),
        (follower.post("<xml><Content>unclosed"), 400),
        (follower.post(b"\xff\xfe not xml at all"), 400),
        (follower.post("<xml>" + "x" * (65 * 1024) + "</xml>"), 413),
        (follower.post_encrypted(body, app_id="wx9999999999999999"), 403),
        (follower.post_encrypted(body, encrypt="bm90IGEgcmVhbCBjaXBoZXJ0ZXh0"), 400),
        (follower.post_encrypted(body, msg_signature="0" * 40), 403),
        (follower.post_encrypted(body, key="QWERTYUIOPASDFGHJKLZXCVBNMqwertyuiopasdfghj"), 400),
    ]
    for answer, status in cases:
        assert answer.status_code == status, (status, answer.text)
        assert "error" in answer.json()
    assert customer_turns(wechat, follower.openid) == []
    assert [m for m in wechat_api.sent if m.openid == follower.openid] == []
    assert httpx.get(f"{wechat.url}/healthz").status_code == 200


def test_wechats_retries_of_one_message_are_handled_once(
    wechat: ServiceProcess, wechat_api: FakeWeChatApi
) -> None:
    follower = Follower(wechat)
    body = follower.message("text", msg_id="6054768590064713728", Content="how much is shipping?")
    answers = [follower.post(body) for _ in range(4)]  # the first and WeChat's three retries
    assert answers[0].status_code == 200 and parse(answers[0].content)["MsgType"] == "text"
    assert [a.text for a in answers[1:]] == ["success"] * 3
    assert [s for s, _ in customer_turns(wechat, follower.openid)] == ["customer", "bot"]
    newcomer = Follower(wechat)
    event = newcomer.message("event", Event="subscribe")
    assert "欢迎" in passive_text(newcomer.post(event))  # a new follower is greeted in Chinese
    assert newcomer.post(event).text == "success"  # the same event again (same follower, same time)


def test_message_types_get_an_answer_each_and_unknown_ones_do_not_break_anything(
    wechat: ServiceProcess,
) -> None:
    follower = Follower(wechat)
    heard = follower.post(follower.message("voice", MediaId="m1", Format="amr", Recognition="运费多少"))
    assert "运费" in passive_text(heard) or "包邮" in passive_text(heard)
    for kind, fields in (
        ("voice", {"MediaId": "m2", "Format": "amr"}),
        ("image", {"PicUrl": "http://example.invalid/p.jpg", "MediaId": "m3"}),
        ("location", {"Location_X": "23.1", "Location_Y": "113.3", "Scale": "20", "Label": "here"}),
        ("link", {"Title": "t", "Description": "d", "Url": "http://example.invalid"}),
    ):
        assert "文字" in passive_text(follower.post(follower.message(kind, **fields))), kind
    assert follower.post(follower.message("hologram", Content="?")).text == "success"
    assert follower.post(follower.message("event", Event="TEMPLATESENDJOBFINISH")).text == "success"
    english = Follower(wechat)
    english.say("how much is shipping?")
    assert "welcome" in passive_text(english.post(english.message("event", Event="subscribe"))).lower()


# -- replies that miss the 5 seconds, agents, the 48-hour window, tokens ------------------------------


def test_a_slow_answer_is_acknowledged_at_once_and_delivered_through_the_api(
    slow: ServiceProcess, wechat_api: FakeWeChatApi
) -> None:
    follower = Follower(slow)
    answer = follower.say("how much is shipping?")
    assert answer.text == "success"
    delivered = sent_to(wechat_api, follower.openid, 1)
    bot = [text for sender, text in customer_turns(slow, follower.openid) if sender == "bot"]
    assert delivered == bot


def test_agent_replies_and_queue_notices_reach_the_follower(
    desk: None, slow: ServiceProcess, wechat_api: FakeWeChatApi
) -> None:
    alice = Agent(slow, "alice")
    alice.online()
    follower = Follower(slow)
    assert follower.say("转人工").text == "success"
    conversation_id = routed_chat(alice)
    sent = alice.call("POST", f"/conversations/{conversation_id}/messages", json={"text": "您好，我是 Alice"})
    assert sent.status_code == 200
    texts = sent_to(wechat_api, follower.openid, 1, including="您好，我是 Alice")
    stored = [text for sender, text in customer_turns(slow, follower.openid) if sender != "customer"]
    assert texts == stored  # every bot, system and agent turn, once, in order
    assert any("转接" in t or "人工" in t for t in texts)


def test_an_expired_token_is_refreshed_once_and_the_message_still_goes(
    slow: ServiceProcess, wechat_api: FakeWeChatApi
) -> None:
    first = Follower(slow)
    first.say("how much is shipping?")
    sent_to(wechat_api, first.openid, 1)
    fetched = wechat_api.token_requests
    second = Follower(slow)
    second.say("how much is shipping?")
    sent_to(wechat_api, second.openid, 1)
    assert wechat_api.token_requests == fetched  # the cached token was reused
    wechat_api.expire_tokens()
    third = Follower(slow)
    third.say("how much is shipping?")
    assert len(sent_to(wechat_api, third.openid, 1)) == 1
    assert wechat_api.token_requests == fetched + 1


def test_outside_the_48_hour_window_the_agent_is_told_and_nothing_is_lost(
    desk: None, slow: ServiceProcess, wechat_api: FakeWeChatApi
) -> None:
    alice = Agent(slow, "alice")
    alice.online()
    follower = Follower(slow)
    follower.say("转人工")
    conversation_id = routed_chat(alice)
    path = f"/conversations/{conversation_id}"

    # WeChat refuses (45015): the message is kept and a note tells the agent.
    wechat_api.out_of_window(follower.openid)
    assert alice.call("POST", f"{path}/messages", json={"text": "still there?"}).status_code == 200
    deadline = time.monotonic() + WAIT
    notes: list[dict[str, Any]] = []
    while not notes and time.monotonic() < deadline:
        time.sleep(0.1)
        notes = alice.call("GET", path).json()["notes"]
    assert "still there?" in notes[0]["text"] and notes[0]["agent_id"] == "wechat"

    # Baton's own count of the window: once it has closed, the agent is refused at once.
    async def close_window() -> None:
        client = Redis.from_url(slow.redis_url, decode_responses=True)
        await client.delete(f"{slow.prefix}wechat:seen:{follower.openid}")  # type: ignore[attr-defined]
        await client.aclose()

    asyncio.run(close_window())
    refused = alice.call("POST", f"{path}/messages", json={"text": "hello?"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "unreachable"
    assert "hello?" not in [t for _, t in customer_turns(slow, follower.openid)]


def test_numbered_quick_replies_are_answered_by_number(
    slow: ServiceProcess, wechat_api: FakeWeChatApi
) -> None:
    follower = Follower(slow)
    follower.say("tell me a joke")  # not understood: the fallback offers a person
    offer = sent_to(wechat_api, follower.openid, 1)[-1]
    assert "1." in offer
    follower.say("1")
    assert ("customer", "/human_handoff") in customer_turns(slow, follower.openid)  # the button's payload
    follower.say("1")  # the offer was used up: "1" is just text now
    assert customer_turns(slow, follower.openid)[-1] == ("customer", "1")


def test_a_follower_who_binds_a_phone_is_one_customer_with_their_web_self(
    desk: None, slow: ServiceProcess, wechat_api: FakeWeChatApi
) -> None:
    follower = Follower(slow)
    follower.say("how much is shipping?")
    visitor = WebVisitor(slow)
    visitor.connect()
    try:
        visitor.say("hello, I wrote on WeChat too")
        backend = {
            "X-Baton-App-Key": ServiceProcess.APP_KEY,
            "Authorization": f"Bearer {ServiceProcess.APP_SECRET}",
        }
        phone = f"+86138{uuid.uuid4().int % 10**8:08d}"
        for channel, external_id in (("web", visitor.visitor_id), ("wechat", follower.openid)):
            linked = httpx.post(
                f"{slow.url}/api/v1/backend/links",
                headers=backend,
                json={"channel": channel, "external_id": external_id, "kind": "phone", "value": phone},
            )
            assert linked.status_code == 200, linked.text
        assert {i["channel"] for i in linked.json()["identities"]} == {"web", "wechat"}
    finally:
        visitor.close()

    # Back on WeChat, the same person asks for an agent, who sees one customer and one story.
    alice = Agent(slow, "alice")
    alice.online()
    follower.say("转人工")
    conversation_id = routed_chat(alice)
    package = alice.call("GET", f"/conversations/{conversation_id}").json()
    assert {i["channel"] for i in package["customer"]["identities"]} == {"web", "wechat"}
    said = [(t["channel"], t["text"]) for t in package["transcript"] if t["sender"] == "customer"]
    assert said[-1] == ("wechat", "转人工")
    # Both channels' messages are in front of the agent: in this conversation, or in its history.
    seen = {channel for channel, _ in said} | {h["channel"] for h in package["history"]}
    assert seen == {"web", "wechat"}

    # The agent's answer goes to WeChat, where the customer wrote last.
    answer = alice.call("POST", f"/conversations/{conversation_id}/messages", json={"text": "Alice here"})
    assert answer.status_code == 200
    assert "Alice here" in sent_to(wechat_api, follower.openid, 1, including="Alice here")


def test_a_union_id_joins_the_followers_openids_into_one_customer(wechat: ServiceProcess) -> None:
    union_id = f"u{uuid.uuid4().hex}"
    first, second = Follower(wechat), Follower(wechat)
    for follower in (first, second):
        assert follower.say("how much is shipping?", UnionId=union_id).status_code == 200

    async def customers() -> set[str]:
        client = Redis.from_url(wechat.redis_url, decode_responses=True)
        try:
            store = ConversationStore(client, prefix=wechat.prefix)  # type: ignore[attr-defined]
            return {(await store.resolve_customer("wechat", f.openid)).id for f in (first, second)}
        finally:
            await client.aclose()

    assert len(asyncio.run(customers())) == 1


def test_the_channel_is_off_until_configured_and_a_bad_configuration_is_refused_clearly(
    baton_service,
) -> None:
    off = httpx.get(f"{baton_service.url}/channels/wechat", params={"echostr": "x"})
    assert off.status_code == 404 and "BATON_WECHAT_TOKEN" in off.json()["error"]["message"]
    assert WeChatConfig.from_settings(Settings(_env_file=None)) is None
    with pytest.raises(ValueError, match="BATON_WECHAT_APP_ID"):
        WeChatConfig.from_settings(Settings(_env_file=None, wechat_token=TOKEN))
    with pytest.raises(ValueError):
        WeChatConfig.from_settings(
            Settings(_env_file=None, wechat_token=TOKEN, wechat_app_id=APP_ID, wechat_aes_key="too-short")
        )


def test_what_follows_a_passive_reply_comes_through_the_api_after_it_in_order(
    desk: None, wechat: ServiceProcess, wechat_api: FakeWeChatApi
) -> None:
    alice = Agent(wechat, "alice")
    alice.online()
    follower = Follower(wechat)
    answer = follower.say("转人工")
    answered_at = time.time()
    first = passive_text(answer)  # "connecting you": quick enough to go back in the callback reply
    deadline = time.monotonic() + WAIT
    replies = [t for s, t in customer_turns(wechat, follower.openid) if s != "customer"]
    while len(replies) < 3 and time.monotonic() < deadline:  # bot, queue notice, agent joined
        time.sleep(0.1)
        replies = [t for s, t in customer_turns(wechat, follower.openid) if s != "customer"]
    assert replies[0] == first
    sent_to(wechat_api, follower.openid, len(replies) - 1)
    through_api = [m for m in wechat_api.sent if m.openid == follower.openid]
    assert [m.content for m in through_api] == replies[1:]  # the rest, once each, in order
    assert through_api[0].time >= answered_at - 0.01  # not before the passive reply had left


def test_a_request_that_waited_too_long_is_answered_through_the_api(
    wechat: ServiceProcess, wechat_api: FakeWeChatApi
) -> None:
    follower = Follower(wechat)
    # WeChat stamped it 5 s ago: it has stopped waiting for this callback's answer.
    answer = follower.post(
        follower.message("text", Content="how much is shipping?"), timestamp=str(int(time.time()) - 5)
    )
    assert answer.text == "success"
    delivered = sent_to(wechat_api, follower.openid, 1)
    assert delivered == [text for sender, text in customer_turns(wechat, follower.openid) if sender == "bot"]
