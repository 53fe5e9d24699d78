"""A real ``python -m handoff.assigner`` killed (SIGKILL) half-way through assigning; a second
one, under another consumer name, finishes the work: each handoff assigned exactly once, every
stream entry acknowledged, conversations in step with the queue at every moment, capacity
respected, and each customer told once that an agent joined.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import redis
from redis.asyncio import Redis

from handoff.agents import Agent
from handoff.keys import GROUP, HandoffKeys
from handoff.queue import HandoffQueue, HandoffRequest

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "t-crash:"
KEYS = HandoffKeys(PREFIX)
HANDOFFS = 12
AGENTS = {"ann": 3, "ben": 3, "cat": 3, "dan": 3}  # 12 slots for 12 chats


class AssignerProcess:
    """``python -m handoff.assigner`` as a subprocess, its log in a file."""

    def __init__(self, redis_url: str, consumer: str, log_path: Path, *extra: str) -> None:
        command = [sys.executable, "-m", "handoff.assigner", "--redis-url", redis_url, "--prefix", PREFIX]
        command += ["--consumer", consumer, "--block-ms", "100", *extra]
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM and wait: a clean stop exits with 0."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def setup(redis_url: str) -> list[str]:
    """Agents online and 12 conversations handed off (enqueued, not admitted); their handoff ids."""

    async def main() -> list[str]:
        client = Redis.from_url(redis_url, decode_responses=True)
        try:
            queue = HandoffQueue(client, prefix=PREFIX)
            for agent_id, slots in AGENTS.items():
                await queue.agents.create(
                    Agent(agent_id, agent_id.title(), max_chats=slots), f"{agent_id}-pw"
                )
                await queue.agents.set_online(agent_id, True)
            ids = []
            for n in range(HANDOFFS):
                customer = await queue.store.resolve_customer("app", f"crash-{n}")
                conversation = await queue.store.current_conversation(customer.id, "app", "en")
                request = HandoffRequest(
                    conversation.id, customer.id, "app", "en", "general", ("too_many_turns",), 1, False
                )
                handoff = await queue.escalate(request, "too_many_turns", first=True)
                assert handoff is not None
                ids.append(handoff.id)
            return ids
        finally:
            await client.aclose()

    return asyncio.run(main())


def assigned_counts(client: redis.Redis) -> Counter[str]:
    """How many "assigned" audit records each handoff has."""
    return Counter(f["handoff_id"] for _id, f in client.xrange(KEYS.audit) if f["type"] == "assigned")


def pending_of(client: redis.Redis, consumer: str) -> int:
    summary = client.xpending(KEYS.stream, GROUP)
    return sum(int(c["pending"]) for c in summary["consumers"] if c["name"] == consumer)


def wait_until(
    condition: Callable[[], bool], what: str, process: AssignerProcess, timeout: float = 30.0
) -> None:
    """Poll ``condition`` (bounded in count and time) while ``process`` runs."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        if time.monotonic() > deadline:
            break
        assert process.process.poll() is None, f"the assigner exited:\n{process.log()}"
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}:\n{process.log()}")


def conversation_states(client: redis.Redis, ids: list[str]) -> Counter[str]:
    return Counter(client.hget(f"{PREFIX}conv:{i.rsplit(':', 1)[0]}", "state") for i in ids)


def assert_in_step(client: redis.Redis, ids: list[str]) -> None:
    """Each conversation's state agrees with its handoff's status (no repair needed, ever)."""
    expected = {"new": "queued", "waiting": "queued", "assigned": "assigned", "closed": "resolved"}
    for handoff_id in ids:
        status = client.hget(KEYS.handoff(handoff_id), "status")
        state = client.hget(f"{PREFIX}conv:{handoff_id.rsplit(':', 1)[0]}", "state")
        assert state == expected[status], (handoff_id, status, state)


def joined_notices(client: redis.Redis, ids: list[str]) -> Counter[str]:
    """How many "joined" notices each conversation's customer got."""
    counts: Counter[str] = Counter()
    for handoff_id in ids:
        conversation_id = handoff_id.rsplit(":", 1)[0]
        for record in client.lrange(f"{PREFIX}conv:{conversation_id}:turns", 0, -1):
            if '"sender":"system"' in record and "joined" in record:
                counts[conversation_id] += 1
    return counts


def finish_and_check(redis_url: str, client: redis.Redis, ids: list[str], tmp_path: Path) -> None:
    """Start a second assigner and check that it completes every assignment exactly once."""
    second = AssignerProcess(redis_url, "second", tmp_path / "second.log", "--reclaim-idle-ms", "200")
    try:

        def done() -> bool:
            statuses = [client.hget(KEYS.handoff(i), "status") for i in ids]
            return (
                statuses.count("assigned") == HANDOFFS
                and conversation_states(client, ids) == {"assigned": HANDOFFS}
                and client.xpending(KEYS.stream, GROUP)["pending"] == 0
            )

        wait_until(done, "every handoff assigned", second)
    finally:
        exit_code = second.stop()
    assert exit_code == 0, second.log()
    assert assigned_counts(client) == dict.fromkeys(ids, 1)
    for agent_id, slots in AGENTS.items():
        held = client.smembers(KEYS.chats(agent_id))
        assert len(held) <= slots
        assert held == {i for i in ids if client.hget(KEYS.handoff(i), "agent_id") == agent_id}
    assert client.xlen(KEYS.stream) == 0  # acknowledged entries are deleted
    assert_in_step(client, ids)
    assert joined_notices(client, ids) == {i.rsplit(":", 1)[0]: 1 for i in ids}


def test_killed_between_two_claims(redis_url, tmp_path):
    ids = setup(redis_url)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        first = AssignerProcess(redis_url, "first", tmp_path / "first.log", "--delay-ms", "300")
        try:
            # Each claim is preceded by a 300 ms pause: kill in one, after a first assignment.
            wait_until(lambda: sum(assigned_counts(client).values()) >= 1, "a first assignment", first)
        finally:
            first.kill()
        assert sum(assigned_counts(client).values()) < HANDOFFS, "the first assigner finished before the kill"
        assert_in_step(client, ids)  # the claim and the conversation's state are one step
        finish_and_check(redis_url, client, ids, tmp_path)
    finally:
        client.close()


def test_killed_with_entries_read_but_not_acknowledged(redis_url, tmp_path):
    ids = setup(redis_url)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        # Four entries a round: kill once some chats are assigned and a later round's entries
        # are read but not yet acknowledged, so the second assigner must take them over.
        first = AssignerProcess(
            redis_url, "first", tmp_path / "first.log", "--delay-ms", "300", "--batch", "4"
        )
        try:
            wait_until(
                lambda: sum(assigned_counts(client).values()) >= 1 and pending_of(client, "first") > 0,
                "assignments with entries still pending",
                first,
            )
        finally:
            first.kill()
        assert pending_of(client, "first") > 0
        assert Counter(client.hget(KEYS.handoff(i), "status") for i in ids)["new"] > 0
        finish_and_check(redis_url, client, ids, tmp_path)
    finally:
        client.close()
