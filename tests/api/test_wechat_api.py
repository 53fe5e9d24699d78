"""WeChat's customer-service message client against the loopback stand-in, with a real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis

from api.channels.wechat_api import MAX_TEXT_BYTES, WeChatApi, WeChatApiError, WeChatUnavailable, split_text
from tests.api.wechat_fake import FakeWeChatApi

PREFIX = "t-wechat-api:"
APP_ID = "wx5f1e2d3c4b5a6978"
SECRET = "0123456789abcdef0123456789abcdef"
FOLLOWER = "oWx1Z0WYZhKEudEeNlnbZA1Gg1pk"
TIMEOUT = 2.0  # seconds WeChatApi waits for the stand-in


@pytest.fixture
def url(redis_url: str) -> Iterator[str]:
    """The session Redis; this file's keys removed afterwards."""
    yield redis_url
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{PREFIX}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def wechat() -> Iterator[FakeWeChatApi]:
    """WeChat's API on 127.0.0.1, knowing one account."""
    with FakeWeChatApi(app_id=APP_ID, app_secret=SECRET) as fake:
        yield fake


@asynccontextmanager
async def replica(url: str, wechat: FakeWeChatApi | str, **settings: Any) -> AsyncIterator[WeChatApi]:
    """A `WeChatApi` with a Redis client of its own, as one replica of the service would have."""
    client = Redis.from_url(url, decode_responses=True)
    base = wechat if isinstance(wechat, str) else wechat.base_url
    api = WeChatApi(
        client,
        settings.pop("app_id", APP_ID),
        settings.pop("app_secret", SECRET),
        api_base=base,
        prefix=PREFIX,
        timeout=settings.pop("timeout", TIMEOUT),
        **settings,
    )
    try:
        yield api
    finally:
        await api.aclose()
        await client.aclose()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The token


def test_token_fetched_once_and_shared_by_sends_and_replicas(url: str, wechat: FakeWeChatApi) -> None:
    async def scenario() -> None:
        async with replica(url, wechat) as first, replica(url, wechat) as second:
            await first.send_text(FOLLOWER, "one")
            await first.send_text(FOLLOWER, "two")
            await second.send_text(FOLLOWER, "three")
            assert (first.token_fetches, second.token_fetches) == (1, 0)
            assert await second.access_token() == wechat.tokens[0]

    asyncio.run(scenario())
    assert wechat.token_requests == 1
    assert [message.content for message in wechat.wait_for(3)] == ["one", "two", "three"]
    assert {message.openid for message in wechat.sent} == {FOLLOWER}


def test_token_cached_in_redis_until_shortly_before_it_expires(url: str, wechat: FakeWeChatApi) -> None:
    async def scenario() -> None:
        async with replica(url, wechat) as api:
            token = await api.access_token()
            assert await api.client.get(f"{PREFIX}wechat:token:{APP_ID}") == token
            assert 7200 - 300 - 5 <= await api.client.ttl(api.token_key) <= 7200 - 300
            wechat.token_ttl = 100  # too short for the margin: still cached a minute, no less
            assert await api.access_token(refresh=True) != token
            assert 55 <= await api.client.ttl(api.token_key) <= 60
            assert api.token_fetches == 2

    asyncio.run(scenario())


def test_expired_token_is_replaced_once_and_the_message_goes_out(url: str, wechat: FakeWeChatApi) -> None:
    async def scenario() -> None:
        async with replica(url, wechat) as api:
            await api.send_text(FOLLOWER, "before")
            wechat.expire_tokens()  # 42001 from now on
            await api.send_text(FOLLOWER, "after")
            assert (api.token_fetches, api.token_refreshes, api.messages_sent) == (2, 1, 2)
            assert await api.access_token() == wechat.tokens[-1]

    asyncio.run(scenario())
    assert [message.content for message in wechat.wait_for(2)] == ["before", "after"]
    assert wechat.send_requests == 3


def test_invalid_credential_is_replaced_once(url: str, wechat: FakeWeChatApi) -> None:
    async def scenario() -> None:
        async with replica(url, wechat) as api:
            await api.access_token()
            wechat.fail_next(40001)  # e.g. the secret was reset and another system took a token
            await api.send_text(FOLLOWER, "hello")
            assert (api.token_fetches, api.token_refreshes) == (2, 1)

    asyncio.run(scenario())
    assert wechat.wait_for(1)[0].content == "hello"


@pytest.mark.parametrize("errcode", [40001, 40014, 42001])
def test_a_second_token_refusal_raises_instead_of_looping(
    url: str, wechat: FakeWeChatApi, errcode: int
) -> None:
    async def scenario() -> None:
        async with replica(url, wechat) as api:
            wechat.fail_next(errcode, times=5)
            with pytest.raises(WeChatApiError) as caught:
                await api.send_text(FOLLOWER, "hello")
            assert caught.value.errcode == errcode
            assert not caught.value.out_of_window
            assert (api.token_fetches, api.token_refreshes) == (2, 1)

    asyncio.run(scenario())
    assert (wechat.token_requests, wechat.send_requests, wechat.sent) == (2, 2, [])


def test_concurrent_first_sends_fetch_the_token_once(url: str, wechat: FakeWeChatApi) -> None:
    wechat.delay_next(0.3, endpoint="token")  # a slow token answer widens the race

    async def scenario() -> None:
        async with replica(url, wechat) as first, replica(url, wechat) as second:
            sends = [api.send_text(FOLLOWER, f"m{i}") for i in range(10) for api in (first, second)]
            await asyncio.gather(*sends)
            assert first.token_fetches + second.token_fetches == 1

    asyncio.run(scenario())
    assert wechat.token_requests == 1
    assert sorted(message.content for message in wechat.wait_for(20)) == sorted(
        f"m{i}" for i in range(10) for _ in range(2)
    )


def test_concurrent_sends_with_an_expired_token_refresh_it_once(url: str, wechat: FakeWeChatApi) -> None:
    async def scenario() -> None:
        async with replica(url, wechat) as first, replica(url, wechat) as second:
            await first.access_token()
            wechat.expire_tokens()
            wechat.delay_next(0.2, endpoint="token")
            await asyncio.gather(*(api.send_text(FOLLOWER, "x") for _ in range(8) for api in (first, second)))
            assert first.token_refreshes + second.token_refreshes == 16  # each saw 42001 once...
            assert first.token_fetches + second.token_fetches == 2  # ...and one new token served all

    asyncio.run(scenario())
    assert wechat.token_requests == 2
    assert len(wechat.wait_for(16)) == 16


@pytest.mark.parametrize(
    ("app_id", "secret", "errcode"), [(APP_ID, "wrong-secret", 40125), ("wx0000000000000000", SECRET, 40013)]
)
def test_refused_credentials_raise_and_cache_nothing(
    url: str, wechat: FakeWeChatApi, app_id: str, secret: str, errcode: int
) -> None:
    async def scenario() -> None:
        async with replica(url, wechat, app_id=app_id, app_secret=secret) as api:
            with pytest.raises(WeChatApiError) as caught:
                await api.send_text(FOLLOWER, "hello")
            assert caught.value.errcode == errcode
            with pytest.raises(WeChatApiError):
                await api.access_token(refresh=True)
            assert await api.client.get(api.token_key) is None
            assert await api.client.get(f"{api.token_key}:lock") is None  # the lock was given back

    asyncio.run(scenario())
    assert wechat.sent == []


def test_logs_show_neither_the_secret_nor_the_token(
    url: str, wechat: FakeWeChatApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        async with replica(url, wechat) as api:
            await api.send_text(FOLLOWER, "hello")
            wechat.expire_tokens()
            await api.send_text(FOLLOWER, "again")
        async with replica(url, wechat, app_secret=SECRET + "x") as wrong:
            with pytest.raises(WeChatApiError):
                await wrong.access_token(refresh=True)

    asyncio.run(scenario())
    assert "access_token=***" in caplog.text  # httpx logged the requests, redacted
    for credential in [SECRET, *wechat.tokens]:
        assert credential not in caplog.text
    assert "40125" in caplog.text


# Messages


def test_out_of_window_raises_and_clears_when_the_follower_writes(url: str, wechat: FakeWeChatApi) -> None:
    async def scenario() -> None:
        async with replica(url, wechat) as api:
            wechat.out_of_window(FOLLOWER)
            with pytest.raises(WeChatApiError) as caught:
                await api.send_text(FOLLOWER, "anyone there?")
            assert caught.value.out_of_window
            assert caught.value.errcode == WeChatApiError.OUT_OF_WINDOW == 45015
            wechat.follower_wrote(FOLLOWER)
            await api.send_text(FOLLOWER, "welcome back")

    asyncio.run(scenario())
    assert [message.content for message in wechat.wait_for(1)] == ["welcome back"]


@pytest.mark.parametrize("errcode", [-1, 40003, 45047])
def test_other_errors_raise_without_a_new_token(url: str, wechat: FakeWeChatApi, errcode: int) -> None:
    async def scenario() -> None:
        async with replica(url, wechat) as api:
            wechat.fail_next(errcode)
            with pytest.raises(WeChatApiError) as caught:
                await api.send_text(FOLLOWER, "hello")
            assert (caught.value.errcode, caught.value.out_of_window) == (errcode, False)
            assert caught.value.errmsg
            assert (api.token_fetches, api.token_refreshes) == (1, 0)

    asyncio.run(scenario())
    assert wechat.send_requests == 1


def test_reply_quota_and_unknown_openid_as_wechat_answers_them(url: str) -> None:
    async def scenario(wechat: FakeWeChatApi) -> None:
        async with replica(url, wechat) as api:
            for i in range(2):
                await api.send_text(FOLLOWER, f"reply {i}")
            with pytest.raises(WeChatApiError) as caught:
                await api.send_text(FOLLOWER, "one too many")
            assert caught.value.errcode == 45047
            wechat.invalid_openid("o-someone-else")
            with pytest.raises(WeChatApiError) as caught:
                await api.send_text("o-someone-else", "hello")
            assert caught.value.errcode == 40003

    with FakeWeChatApi(app_id=APP_ID, app_secret=SECRET, reply_quota=2) as wechat:
        asyncio.run(scenario(wechat))
        assert len(wechat.sent) == 2


def test_chinese_text_arrives_unescaped(url: str, wechat: FakeWeChatApi) -> None:
    text = "您好！订单 #1024 已发货，预计明天送达 📦"

    async def scenario() -> None:
        async with replica(url, wechat) as api:
            await api.send_text(FOLLOWER, text)

    asyncio.run(scenario())
    assert wechat.wait_for(1)[0].content == text


def test_the_stand_in_shows_escapes_literally_as_wechat_does(wechat: FakeWeChatApi) -> None:
    """Guards the test above: an ASCII-escaped body would not pass for the real text."""
    with httpx.Client(base_url=wechat.base_url) as http:
        token = http.get(
            "/cgi-bin/token", params={"grant_type": "client_credential", "appid": APP_ID, "secret": SECRET}
        ).json()["access_token"]
        body = {"touser": FOLLOWER, "msgtype": "text", "text": {"content": "您好 C:\\users"}}
        escaped = json.dumps(body).encode(
            "ascii"
        )  # Python's default, ensure_ascii=True (httpx's json= is not)
        answer = http.post("/cgi-bin/message/custom/send", params={"access_token": token}, content=escaped)
        assert answer.json() == {"errcode": 0, "errmsg": "ok"}
        garbage = http.post(
            "/cgi-bin/message/custom/send", params={"access_token": token}, content=b"{touser"
        )
        assert garbage.json()["errcode"] == 47001
    assert wechat.wait_for(1)[0].content == "\\u60a8\\u597d C:\\users"


def test_long_text_is_split_at_sentence_ends_within_the_limit(url: str, wechat: FakeWeChatApi) -> None:
    sentence = "您的退款申请已经提交，我们会在三个工作日内处理完毕。"  # 26 characters, 78 bytes
    text = sentence * 80  # 6240 bytes

    async def scenario() -> None:
        async with replica(url, wechat) as api:
            await api.send_text(FOLLOWER, text)
            assert api.messages_sent == 4

    asyncio.run(scenario())
    contents = [message.content for message in wechat.wait_for(4)]
    assert "".join(contents) == text
    for content in contents:
        assert len(content.encode("utf-8")) <= MAX_TEXT_BYTES
        assert content.endswith("。")
    assert len(wechat.sent) == 4


def test_split_text_prefers_paragraphs_then_lines_then_sentences() -> None:
    paragraph = "First paragraph line. " * 3
    text = f"{paragraph}\n\n{paragraph}\n\n{paragraph}"
    assert split_text(text, max_bytes=150) == [f"{paragraph}\n\n{paragraph}".strip(), paragraph.strip()]
    lines = "\n".join(f"line {i}, with words" for i in range(10))
    pieces = split_text(lines, max_bytes=60)
    assert all(len(piece.encode()) <= 60 and "\n" not in piece[-1:] for piece in pieces)
    assert "\n".join(pieces) == lines
    assert split_text("一句话。" * 5, max_bytes=30) == ["一句话。一句话。", "一句话。一句话。", "一句话。"]


def test_split_text_cuts_between_characters_when_there_is_no_boundary() -> None:
    text = "字" * 1000 + "a" * 10
    pieces = split_text(text, max_bytes=100)
    assert "".join(pieces) == text
    assert all(len(piece.encode("utf-8")) <= 100 for piece in pieces)
    assert split_text("  \n ") == []
    assert split_text("short") == ["short"]


def test_an_empty_text_is_refused_before_reaching_wechat(url: str, wechat: FakeWeChatApi) -> None:
    async def scenario() -> None:
        async with replica(url, wechat) as api:
            with pytest.raises(ValueError):
                await api.send_text(FOLLOWER, " \n")

    asyncio.run(scenario())
    assert (wechat.token_requests, wechat.send_requests) == (0, 0)


# WeChat out of reach


def test_unreachable_server_raises_unavailable_within_the_timeout(url: str) -> None:
    async def scenario() -> None:
        async with replica(url, f"http://127.0.0.1:{closed_port()}", timeout=1.0) as api:
            started = time.monotonic()
            with pytest.raises(WeChatUnavailable):
                await api.send_text(FOLLOWER, "hello")
            assert time.monotonic() - started < 1.5

    asyncio.run(scenario())


def test_a_slow_answer_raises_unavailable_within_the_timeout(url: str, wechat: FakeWeChatApi) -> None:
    async def scenario() -> None:
        async with replica(url, wechat, timeout=0.5) as api:
            await api.access_token()
            wechat.delay_next(3.0)
            started = time.monotonic()
            with pytest.raises(WeChatUnavailable):
                await api.send_text(FOLLOWER, "hello")
            assert time.monotonic() - started < 1.0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("status", "body"),
    [(502, b"<html>Bad Gateway</html>"), (200, b"not json"), (200, b"[1, 2]"), (500, b'{"errcode": -1}')],
)
def test_answers_that_are_not_wechat_json_raise_unavailable(
    url: str, wechat: FakeWeChatApi, status: int, body: bytes
) -> None:
    async def scenario() -> None:
        async with replica(url, wechat) as api:
            wechat.respond_next(status, body, endpoint="token")
            with pytest.raises(WeChatUnavailable):
                await api.access_token()
            wechat.respond_next(status, body)
            with pytest.raises(WeChatUnavailable):
                await api.send_text(FOLLOWER, "hello")
            await api.send_text(FOLLOWER, "recovered")

    asyncio.run(scenario())
    assert [message.content for message in wechat.wait_for(1)] == ["recovered"]


def test_a_shared_http_client_stays_open(url: str, wechat: FakeWeChatApi) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            async with replica(url, wechat, http=http) as api:
                await api.send_text(FOLLOWER, "hello")
            assert not http.is_closed

    asyncio.run(scenario())
    assert wechat.wait_for(1)[0].content == "hello"
