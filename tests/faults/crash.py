"""The crash scenario of the fault tests and of ``bench/crash_campaign.py``.

A chain of crashes, each on fresh traffic: many web customers each write one message at once,
and ``baton serve`` is killed with SIGKILL some milliseconds into the burst (or kills itself at
a failpoint, `conversations.failpoints`); it is started again on the same Redis and port (the
next crash's burst then meets whatever the last one left pending). After the last crash the
service starts clean and every customer's page reconnects and sends its message again with the
same ``client_message_id``, as the chat page does for a message it saw no answer to. Then the
store is read back and every promise is checked for every customer: each message stored once,
handled once (one bot answer, one escalation, one queue entry, one queue notice), nothing left
pending, the counts right.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
from websockets.asyncio.client import connect

from tests.conftest import ServiceProcess

REQUEST = "I want to talk to a person"
SETTLE_SECONDS = 60.0  # how long the service may take to finish what the crash left (a bound)
FRAME_SECONDS = 30.0


@dataclass(frozen=True)
class Crash:
    """One crash of a chain: SIGKILL ``kill_after`` seconds into the burst, or at ``failpoint``."""

    name: str
    kill_after: float | None = None
    failpoint: str | None = None


@dataclass
class Customer:
    """One web customer of a burst."""

    visitor_id: str
    token: str
    message_id: str
    crash: str = ""  # the crash whose burst it was in
    acked_seq: int | None = None  # the seq the service acknowledged before the crash, if it did


@dataclass
class Outcome:
    """What one chain of crashes found."""

    crashes: list[str]
    customers: int
    acked_before_kill: dict[str, int] = field(default_factory=dict)
    recovery_crashes: int = 0  # failpoints that fired while the service finished an earlier crash's work
    unreached: list[str] = field(default_factory=list)  # failpoints the burst never reached (then killed)
    problems: list[str] = field(default_factory=list)
    settle_seconds: float = 0.0


async def _session(client: httpx.AsyncClient, url: str) -> Customer:
    answer = await client.post(f"{url}/api/v1/web/session", json={})
    answer.raise_for_status()
    body = answer.json()
    return Customer(body["visitor_id"], body["token"], uuid.uuid4().hex)


async def _frames_until(ws: Any, test: Any, timeout: float) -> dict[str, Any] | None:
    """Read frames until one passes ``test``; None if the socket closes or time runs out."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=left))
        except (TimeoutError, OSError, ValueError) as exc:
            del exc
            return None
        except Exception:  # the connection closed (the service was killed)
            return None
        if test(frame):
            return frame
    return None


async def _send_and_ack(service: ServiceProcess, customer: Customer, timeout: float) -> dict[str, Any] | None:
    """Connect, send the customer's message, and return its ack (None if none came in time)."""
    url = f"{service.ws_url}/ws/web?token={customer.token}"
    try:
        async with connect(url, open_timeout=timeout) as ws:
            await _frames_until(ws, lambda f: f["type"] == "hello", timeout)
            frame = {"type": "message", "text": REQUEST, "client_message_id": customer.message_id}
            await ws.send(json.dumps(frame))
            return await _frames_until(
                ws,
                lambda f: f["type"] == "ack" and f.get("client_message_id") == customer.message_id,
                timeout,
            )
    except Exception:  # refused or cut by the kill: the page will resend
        return None


def _start(service: ServiceProcess, failpoint: str | None, outcome: Outcome) -> bool:
    """Start the service, armed with ``failpoint``; True if it runs armed.

    An armed start may die before it is up: the failpoint fired while the service was finishing
    what the last crash left (itself a crash worth having). After three of those it starts unarmed.
    """
    for _ in range(3 if failpoint else 0):
        service.extra_env["BATON_FAILPOINT"] = failpoint
        try:
            service.start()
            return True
        except RuntimeError:
            if service.process is None or service.process.returncode != -signal.SIGKILL:
                raise
            outcome.recovery_crashes += 1
        finally:
            service.extra_env.pop("BATON_FAILPOINT", None)
    service.start()
    return failpoint is None


def _died(service: ServiceProcess) -> bool:
    return service.process is None or service.process.poll() is not None


async def _burst(service: ServiceProcess, customers: list[Customer], kill_after: float | None) -> bool:
    """Every customer sends at once; the service is killed ``kill_after`` seconds in, or dies by
    itself at its failpoint. False when the failpoint was never reached (the service is killed then)."""
    reached = True
    sends = [asyncio.create_task(_send_and_ack(service, c, FRAME_SECONDS)) for c in customers]
    if kill_after is not None:
        await asyncio.sleep(kill_after)
        if not _died(service):
            service.process.send_signal(signal.SIGKILL)
    else:  # a failpoint kills it; wait for that (bounded)
        deadline = time.monotonic() + FRAME_SECONDS
        while not _died(service) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not _died(service):
            reached = False
            service.process.send_signal(signal.SIGKILL)
        elif service.process.returncode != -signal.SIGKILL:
            raise AssertionError(f"the service exited with {service.process.returncode}, not by SIGKILL")
    service.process.wait(timeout=30)
    service.process = None
    for customer, task in zip(customers, sends, strict=True):
        with contextlib.suppress(Exception):
            ack = await asyncio.wait_for(task, timeout=FRAME_SECONDS)
            if ack is not None:
                customer.acked_seq = ack["seq"]
    return reached


def chain(
    service: ServiceProcess, prefix: str, redis_url: str, crashes: list[Crash], customers: int
) -> Outcome:
    """Each crash on a burst of ``customers`` new customers, then a clean start, the resends and the
    checks. The service is left running."""
    service.extra_env["BATON_REDIS_PREFIX"] = prefix
    everyone: list[Customer] = []
    outcome = Outcome([c.name for c in crashes], customers * len(crashes))

    async def main() -> None:
        # Every visitor's token first (they stay valid across restarts: the signing key is kept).
        await asyncio.to_thread(service.start)
        async with httpx.AsyncClient(timeout=FRAME_SECONDS) as client:
            tokens = await asyncio.gather(
                *(_session(client, service.url) for _ in range(len(crashes) * customers))
            )
        service.stop()
        for number, crash in enumerate(crashes):
            burst = tokens[number * customers : (number + 1) * customers]
            for customer in burst:
                customer.crash = crash.name
            armed = await asyncio.to_thread(_start, service, crash.failpoint, outcome)
            if not await _burst(service, burst, crash.kill_after if armed else (crash.kill_after or 0.2)):
                outcome.unreached.append(crash.name)
            outcome.acked_before_kill[crash.name] = sum(c.acked_seq is not None for c in burst)
            everyone.extend(burst)
        await asyncio.to_thread(service.start)
        resent = await asyncio.gather(*(_send_and_ack(service, c, FRAME_SECONDS) for c in everyone))
        for customer, ack in zip(everyone, resent, strict=True):
            if ack is None:
                outcome.problems.append(f"{customer.crash}/{customer.visitor_id}: no ack for the resend")
            elif customer.acked_seq is not None and ack["seq"] != customer.acked_seq:
                outcome.problems.append(
                    f"{customer.crash}/{customer.visitor_id}: acked seq {customer.acked_seq}, then {ack['seq']}"
                )

    asyncio.run(main())
    started = time.monotonic()
    outcome.problems += settle(redis_url, prefix, everyone)
    outcome.settle_seconds = round(time.monotonic() - started, 2)
    return outcome


def settle(redis_url: str, prefix: str, customers: list[Customer]) -> list[str]:
    """Wait (bounded) until every promise holds; the problems still found at the end."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            problems = check(client, prefix, customers)
            if not problems or time.monotonic() > deadline:
                return problems
            time.sleep(0.2)
    finally:
        client.close()


def check(client: redis.Redis, prefix: str, customers: list[Customer]) -> list[str]:
    """Every broken promise, as text: empty when all hold."""
    problems: list[str] = []
    for customer in customers:
        problems += _check_customer(client, prefix, customer)
    for stream, group in ((f"{prefix}inbox", "handlers"), (f"{prefix}handoffs:stream", "assigners")):
        with contextlib.suppress(redis.ResponseError):
            pending = client.xpending(stream, group)["pending"]
            if pending:
                problems.append(f"{stream}: {pending} entries still pending")
    stats = client.hgetall(f"{prefix}metrics:total")
    for name in ("conversations", "conversations_handed_off", "handoffs"):
        if int(float(stats.get(name, 0))) != len(customers):
            problems.append(f"metrics {name} = {stats.get(name)}, expected {len(customers)}")
    return problems


def _check_customer(client: redis.Redis, prefix: str, customer: Customer) -> list[str]:
    who = f"{customer.crash}/{customer.visitor_id}"
    customer_id = client.get(f"{prefix}identity:web:{customer.visitor_id}")
    if customer_id is None:
        return [f"{who}: unknown customer"]
    conversations = client.zrange(f"{prefix}customer:{customer_id}:conversations", 0, -1)
    if len(conversations) != 1:
        return [f"{who}: {len(conversations)} conversations"]
    conversation_id = conversations[0]
    conversation = client.hgetall(f"{prefix}conv:{conversation_id}")
    turns = [json.loads(t) for t in client.lrange(f"{prefix}conv:{conversation_id}:turns", 0, -1)]
    problems = []
    asked = [t for t in turns if t["sender"] == "customer"]
    if [t.get("client_message_id") for t in asked] != [customer.message_id]:
        problems.append(f"{who}: customer turns {[t.get('client_message_id') for t in asked]}")
    answers = [t for t in turns if t["sender"] == "bot"]
    if len(answers) != 1 or (asked and answers[0].get("reply_to") != asked[0]["seq"]):
        problems.append(f"{who}: {len(answers)} bot answers")
    notices = [t for t in turns if t["sender"] == "system"]
    if len(notices) != 1:
        problems.append(f"{who}: {len(notices)} queue notices")
    if conversation.get("state") not in ("queued", "assigned"):
        problems.append(f"{who}: conversation is {conversation.get('state')}")
    if conversation.get("handoff_count") != "1":
        problems.append(f"{who}: handoff_count {conversation.get('handoff_count')}")
    if conversation.get("handled") != conversation.get("received"):
        problems.append(f"{who}: handled {conversation.get('handled')} of {conversation.get('received')}")
    handoffs = client.zrange(f"{prefix}handoffs:conv:{conversation_id}", 0, -1)
    if len(handoffs) != 1:
        problems.append(f"{who}: {len(handoffs)} handoffs")
    elif client.hget(f"{prefix}handoff:{handoffs[0]}", "status") not in ("waiting", "assigned"):
        problems.append(f"{who}: handoff {client.hget(f'{prefix}handoff:{handoffs[0]}', 'status')}")
    return problems
