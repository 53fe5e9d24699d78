"""The agent directory on a real Redis: accounts, scrypt passwords, presence, demo users."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from handoff.agents import DEMO_AGENTS, Agent, AgentDirectory, AgentExists, UnknownAgent, demo_password

PREFIX = "t-agents:"


def run(redis_url: str, body: Callable[[AgentDirectory], Awaitable[Any]]) -> Any:
    """Run ``body`` with a directory on its own client, closed afterwards."""

    async def main() -> Any:
        client = Redis.from_url(redis_url, decode_responses=True)
        try:
            return await body(AgentDirectory(client, PREFIX))
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_create_and_verify(redis_url):
    async def body(directory: AgentDirectory) -> None:
        agent = Agent("dana", "Dana", "agent", ("general", "billing"), ("en",), 4)
        await directory.create(agent, "correct horse")
        assert await directory.verify("dana", "correct horse") == agent
        assert await directory.verify("dana", "wrong horse") is None
        assert await directory.verify("nobody", "correct horse") is None
        assert await directory.verify("bad:id", "correct horse") is None
        assert await directory.get("dana") == agent
        assert await directory.get("nobody") is None
        assert [a.id for a in await directory.all()] == ["dana"]

    run(redis_url, body)


def test_existing_id_is_refused_unless_replaced(redis_url):
    async def body(directory: AgentDirectory) -> None:
        await directory.create(Agent("erin", "Erin"), "first-password")
        with pytest.raises(AgentExists):
            await directory.create(Agent("erin", "Someone else"), "second-password")
        assert (await directory.get("erin")).name == "Erin"
        assert await directory.verify("erin", "first-password") is not None

        await directory.create(Agent("erin", "Erin B.", max_chats=1), "second-password", replace=True)
        assert (await directory.get("erin")).name == "Erin B."
        assert await directory.verify("erin", "first-password") is None
        assert await directory.verify("erin", "second-password") is not None

    run(redis_url, body)


def test_only_a_salted_scrypt_hash_is_stored(redis_url):
    password = "s3cret-Pa55word"

    async def body(directory: AgentDirectory) -> None:
        await directory.create(Agent("fay", "Fay"), password)
        await directory.create(Agent("gus", "Gus"), password)
        client = directory.client
        everything = []
        for key in await client.keys(f"{PREFIX}*"):
            kind = await client.type(key)
            if kind == "string":
                everything.append(await client.get(key))
            elif kind == "hash":
                everything.extend((await client.hgetall(key)).values())
            elif kind == "set":
                everything.extend(await client.smembers(key))
        assert not any(password in value for value in everything)
        stored_fay = await client.get(directory.keys.password("fay"))
        stored_gus = await client.get(directory.keys.password("gus"))
        scheme, n, r, p, salt, digest = stored_fay.split("$")
        assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
        assert len(bytes.fromhex(salt)) == 16 and len(bytes.fromhex(digest)) == 32
        assert stored_fay != stored_gus  # same password, different salts
        assert "password" not in await client.hgetall(directory.keys.agent("fay"))
        assert "password" not in json.dumps((await directory.get("fay")).to_dict())

    run(redis_url, body)


def test_agent_fields_are_checked():
    with pytest.raises(ValueError):
        Agent("has:colon", "X")
    with pytest.raises(ValueError):
        Agent("ok", "X", role="boss")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Agent("ok", "X", languages=("fr",))
    assert Agent.from_dict(Agent("ok", "X", skills=("a", "b")).to_dict()) == Agent(
        "ok", "X", skills=("a", "b")
    )


def test_online_and_offline_publish_once_per_change(redis_url):
    async def body(directory: AgentDirectory) -> list[dict[str, Any]]:
        await directory.create(Agent("hal", "Hal"), "pw-hal")
        await directory.create(Agent("ivy", "Ivy"), "pw-ivy")
        async with directory.client.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(directory.keys.events)
            assert await directory.set_online("hal", True) is True
            assert await directory.set_online("hal", True) is False  # no change, no event
            assert [a.id for a in await directory.online()] == ["hal"]
            assert await directory.is_online("hal") and not await directory.is_online("ivy")
            assert await directory.set_online("hal", False) is True
            assert await directory.online() == []
            with pytest.raises(UnknownAgent):
                await directory.set_online("nobody", True)
            events = []
            deadline = time.monotonic() + 5
            for _ in range(20):  # expect two; a few more polls show there is no third
                if time.monotonic() > deadline:
                    break
                message = await pubsub.get_message(timeout=0.2)
                if message is not None:
                    events.append(json.loads(message["data"]))
                elif len(events) >= 2:
                    break
            return events

    events = run(redis_url, body)
    assert [(e["type"], e["agent_id"]) for e in events] == [("agent_online", "hal"), ("agent_offline", "hal")]
    assert all(e["handoff_id"] is None and isinstance(e["at"], float) for e in events)


def test_seed_demo_once_only(redis_url):
    async def body(directory: AgentDirectory) -> tuple[int, int, int]:
        first, second = await asyncio.gather(directory.seed_demo(), directory.seed_demo())
        third = await directory.seed_demo()
        for agent in DEMO_AGENTS:
            assert await directory.verify(agent.id, demo_password(agent.id)) == agent
        assert await directory.verify("alice", "bob-demo") is None
        return first, second, third

    first, second, third = run(redis_url, body)
    assert first + second == 4 and third == 0
    by_id = {agent.id: agent for agent in DEMO_AGENTS}
    assert set(by_id) == {"alice", "bob", "chen", "sam"}
    assert by_id["chen"].languages == ("zh",) and by_id["chen"].max_chats == 2
    assert by_id["sam"].role == "supervisor" and by_id["sam"].max_chats == 5
    assert set(by_id["alice"].skills) | set(by_id["bob"].skills) <= set(by_id["sam"].skills)


def test_seed_demo_leaves_an_existing_directory_alone(redis_url):
    async def body(directory: AgentDirectory) -> int:
        await directory.create(Agent("zoe", "Zoe"), "pw-zoe")
        created = await directory.seed_demo()
        assert [a.id for a in await directory.all()] == ["zoe"]
        return created

    assert run(redis_url, body) == 0
