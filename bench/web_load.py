"""Load benchmark of the web chat channel: many web visitors chatting at once, on loopback.

What it measures: SESSIONS concurrent web chat sessions (default 200), each sending one
message every INTERVAL seconds (default 2) for DURATION seconds (default 60). For every
message, the time until the bot's reply arrives; whether every message got exactly one
acknowledgement and exactly one bot reply (nothing lost, nothing duplicated); and the memory
and CPU the service used meanwhile. Targets (reported, not enforced): reply latency
p50 <= 20 ms and p99 <= 100 ms, zero lost or duplicated messages.

How it measures:

- Each session is a new web visitor, as the chat page is: a token from
  ``POST /api/v1/web/session``, then its own WebSocket to ``/ws/web``. All sessions connect
  first; then the load starts at t0.
- Session i sends message k at t0 + i * INTERVAL / SESSIONS + k * INTERVAL: the sends are spread
  evenly over every interval (a steady SESSIONS / INTERVAL messages per second, no thundering
  herd), and each goes out on schedule whether or not the previous reply has come (an open
  loop, so a slow reply cannot slow the offered load down and hide itself). How late the
  generator actually sent ("send lag") is reported, to show it kept up; the achieved rate is
  (messages sent - 1) / (last send - first send).
- Reply latency is ``time.perf_counter()`` from just before ``ws.send`` of a message to the
  arrival of the bot's reply: the ``turn`` frame from sender ``bot`` whose ``reply_to`` is the
  message's seq. Percentiles are nearest-rank, over every reply received.
- Message texts are customer messages the bot was not trained on: the held-out development
  sets bench/data/zh_dev.yml and en_dev.yml (Chinese and English), without the intents that
  hand the conversation to a person (human_handoff, complaint, the knowledge base's
  ``sensitive_intents``) and without out_of_scope. Each session draws its own random sequence
  of texts (seeded by --seed), so the traffic is varied, not one string repeated.
- Correctness, per message: one ack not marked duplicate, one bot reply within --timeout
  seconds, no error frame; per connection, every turn delivered once, none skipped. Then the
  service's store is read back (the Redis list ``<prefix>conv:<id>:turns`` of each session's
  conversation): every message stored once, in the order sent, each answered by exactly one bot turn (its ``reply_to``).
  The stored turns also carry the service's own timings (NLU, whole bot turn), reported beside
  the latency seen by the client. Should a conversation leave the bot all the same (``state``
  frame, e.g. ``queued``), its session stops sending and the report warns that the load was
  lower than offered.
- Memory: the resident set size (VmRSS in /proc/<pid>/status) of the service process and,
  separately, of its private redis-server, sampled every second. CPU: utime + stime from
  /proc/<pid>/stat over the load window (t0 until every reply has come), for the service, its
  Redis and this load generator (``time.process_time``), which runs on the same machine and
  competes for the same cores.

Run it on an otherwise idle machine; the load average at the start is reported. Examples::

    # the full benchmark: starts `baton serve` itself (private Redis in a temporary folder)
    .venv/bin/python bench/web_load.py --start

    # a quick check
    .venv/bin/python bench/web_load.py --start --sessions 20 --duration 10

    # a service that is already running: give its Redis for the store check, its pid for memory
    .venv/bin/python bench/web_load.py --url http://127.0.0.1:8000 \\
        --redis-url redis://127.0.0.1:6379/0 --pid 12345

Exit status: 0 when nothing was lost or duplicated (live or in the store), 1 otherwise,
2 when the benchmark could not run (the service did not start, a session could not connect).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
DEV_SETS = (ROOT / "bench" / "data" / "zh_dev.yml", ROOT / "bench" / "data" / "en_dev.yml")
# Intents whose messages would take the bot out of the conversation, or that it does not know.
EXCLUDED_INTENTS = frozenset({"human_handoff", "complaint", "out_of_scope"})
TARGET_P50_MS = 20.0
TARGET_P99_MS = 100.0
CONNECT_CONCURRENCY = 20  # sessions opening at once during set-up
SETTLE_SECONDS = 0.5  # kept listening after the last reply, to catch a late duplicate
ENTITY = re.compile(r"\[([^\]]*)\](?:\([^)]*\)|\{[^}]*\})")  # Rasa's [text](entity) / [text]{...}
PRIVATE_REDIS = re.compile(r"started a private Redis on (\S+)")


class BenchmarkError(Exception):
    """The benchmark could not run (exit status 2)."""


# -- the messages ------------------------------------------------------------------------------


def sensitive_intents(kb: Path) -> set[str]:
    """The knowledge base's ``sensitive_intents`` (handoff.yml): those always go to a person."""
    path = kb / "handoff.yml"
    if not path.is_file():
        return set()
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {str(name) for name in data.get("sensitive_intents") or []}


def load_dev_messages(paths: Iterable[Path], excluded: set[str]) -> list[str]:
    """The distinct example texts of Rasa NLU files, without ``excluded`` intents or entity markup."""
    texts: list[str] = []
    for path in paths:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for block in data.get("nlu") or []:
            intent = block.get("intent")
            if not intent or intent in excluded or not block.get("examples"):
                continue
            for line in str(block["examples"]).splitlines():
                line = line.strip()
                if line.startswith("- "):
                    text = ENTITY.sub(r"\1", line[2:]).strip()
                    if text:
                        texts.append(text)
    return list(dict.fromkeys(texts))


def load_message_file(path: Path) -> list[str]:
    """One message per non-empty line."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# -- one session -------------------------------------------------------------------------------


@dataclass
class Message:
    """One message a session sent, and what came back for it (times are ``perf_counter``)."""

    client_message_id: str
    text: str
    due: float
    sent_at: float = 0.0
    send_failed: bool = False
    acks: int = 0
    ack_at: float | None = None
    seq: int | None = None  # the seq of its stored turn, from the ack or the echo
    reply_at: float | None = None
    error: str | None = None  # the code of an error frame about this message

    def outcome(self, timeout: float) -> str | None:
        """Why the message counts as lost, or None if it was answered in time."""
        if self.send_failed:
            return "send_failed"
        if self.error is not None:
            return "refused"
        if self.acks == 0:
            return "no_ack"
        if self.reply_at is None:
            return "no_reply"
        if self.reply_at - self.sent_at > timeout:
            return "late_reply"
        return None

    def waiting(self, now: float, timeout: float) -> bool:
        """True while an ack or reply is still missing and may yet come."""
        if self.send_failed or self.error is not None:
            return False
        return (self.acks == 0 or self.reply_at is None) and now - self.sent_at < timeout


@dataclass
class Session:
    """One web visitor: a token, a WebSocket, the messages it sent and the frames it received.

    Args:
        index: its number (0-based); the send offset within each interval follows from it.
        texts: the messages it will send, in order.
        offset: seconds after t0 of its first message.
        run_id: makes client message ids unique across runs.
    """

    index: int
    texts: list[str]
    offset: float
    run_id: str
    ws: ClientConnection | None = None
    messages: list[Message] = field(default_factory=list)
    conversations: list[str] = field(default_factory=list)  # in the order they appeared
    state: str | None = None  # the conversation's state from the last ``state`` frame
    stopped_early: bool = False  # stopped sending because the conversation left the bot
    closing: bool = False
    errors: Counter[str] = field(default_factory=Counter)
    duplicated: Counter[str] = field(default_factory=Counter)
    _by_id: dict[str, Message] = field(default_factory=dict)
    _turn_owner: dict[tuple[str, int], Message] = field(default_factory=dict)  # customer turn -> message
    _delivered: set[tuple[str, int]] = field(default_factory=set)
    _receiver: asyncio.Task[None] | None = None

    async def open(self, http: httpx.AsyncClient, ws_base: str, timeout: float) -> None:
        """Get a visitor token, connect, and wait for the ``hello`` frame."""
        response = await http.post("/api/v1/web/session", json={}, timeout=timeout)
        response.raise_for_status()
        token = response.json()["token"]
        self.ws = await connect(
            f"{ws_base}/ws/web?token={quote(token)}&conversation=&after=0",
            open_timeout=timeout,
            max_size=2**20,
        )
        hello = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        if hello.get("type") != "hello":
            raise BenchmarkError(f"session {self.index}: first frame is not hello: {hello}")
        self._receiver = asyncio.create_task(self._receive(), name=f"session-{self.index}")

    async def send_all(self, t0: float, interval: float) -> None:
        """Send each text at its scheduled time (see the module docstring)."""
        assert self.ws is not None
        for k, text in enumerate(self.texts):
            due = t0 + self.offset + k * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.state not in (None, "bot"):
                self.stopped_early = True  # the bot is silent now: more messages would go unanswered
                return
            message = Message(f"{self.run_id}-{self.index}-{k}", text, due)
            self.messages.append(message)
            self._by_id[message.client_message_id] = message
            frame = json.dumps(
                {"type": "message", "text": text, "client_message_id": message.client_message_id},
                ensure_ascii=False,
            )
            message.sent_at = time.perf_counter()
            try:
                await self.ws.send(frame)
            except ConnectionClosed:
                message.send_failed = True

    def waiting(self, now: float, timeout: float) -> bool:
        """True while some message may still get its ack or reply."""
        return any(m.waiting(now, timeout) for m in self.messages)

    async def close(self) -> None:
        """Close the WebSocket and stop receiving."""
        self.closing = True
        if self.ws is not None:
            await self.ws.close()
        if self._receiver is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._receiver

    def undelivered_turns(self) -> int:
        """Turns the connection skipped: seqs below the highest one received that never arrived."""
        missing = 0
        for conversation in self.conversations:
            seqs = {seq for conv, seq in self._delivered if conv == conversation}
            if seqs:
                missing += max(seqs) - len(seqs)
        return missing

    async def _receive(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                now = time.perf_counter()
                try:
                    frame = json.loads(raw)
                except ValueError:
                    self.errors["frame_not_json"] += 1
                    continue
                self._on_frame(frame, now)
        except ConnectionClosed:
            pass
        if not self.closing:
            self.errors["connection_closed_by_service"] += 1

    def _on_frame(self, frame: dict[str, Any], now: float) -> None:
        kind = frame.get("type")
        if kind == "ack":
            self._on_ack(frame, now)
        elif kind == "turn":
            self._on_turn(frame.get("turn") or {}, now)
        elif kind == "error":
            code = str(frame.get("code") or "unknown")
            self.errors[code] += 1
            message = self._by_id.get(str(frame.get("client_message_id")))
            if message is not None:
                message.error = code
        elif kind == "state":
            self.state = frame.get("state")
        elif kind not in ("typing", "pong", "hello"):
            self.errors[f"unknown_frame_{kind}"] += 1

    def _on_ack(self, frame: dict[str, Any], now: float) -> None:
        message = self._by_id.get(str(frame.get("client_message_id")))
        if message is None:
            self.errors["ack_for_unknown_message"] += 1
            return
        message.acks += 1
        if message.acks > 1:
            self.duplicated["ack_twice"] += 1
        else:
            message.ack_at = now
        if frame.get("duplicate"):
            self.duplicated["ack_marked_duplicate"] += 1
        self._own(message, str(frame.get("conversation_id")), frame.get("seq"))

    def _on_turn(self, turn: dict[str, Any], now: float) -> None:
        conversation, seq = str(turn.get("conversation_id")), turn.get("seq")
        if not isinstance(seq, int):
            self.errors["turn_without_seq"] += 1
            return
        if (conversation, seq) in self._delivered:
            self.duplicated["turn_delivered_twice"] += 1
            return
        self._delivered.add((conversation, seq))
        if conversation not in self.conversations:
            self.conversations.append(conversation)
        sender = turn.get("sender")
        if sender == "customer":
            message = self._by_id.get(str(turn.get("client_message_id")))
            if message is None:
                self.errors["turn_of_unknown_message"] += 1
            else:
                self._own(message, conversation, seq)
        elif sender == "bot":
            # reply_to names the message answered (turns interleave when a customer sends
            # again before the answer is out, as under overload)
            message = self._turn_owner.get((conversation, turn.get("reply_to")))
            if message is None:
                self.duplicated["bot_turn_answering_no_sent_message"] += 1
                return
            if message.reply_at is not None:
                self.duplicated["second_bot_reply"] += 1
            else:
                message.reply_at = now

    def _own(self, message: Message, conversation: str, seq: object) -> None:
        """Record that ``message`` is stored as turn ``seq`` of ``conversation``."""
        if not isinstance(seq, int):
            return
        if conversation not in self.conversations:
            self.conversations.append(conversation)
        if message.seq is None:
            message.seq = seq
            self._turn_owner[(conversation, seq)] = message
        elif message.seq != seq:
            self.duplicated["message_stored_twice"] += 1


def build_sessions(
    count: int, interval: float, duration: float, pool: Sequence[str], seed: int
) -> list[Session]:
    """``count`` sessions, each with its own seeded random texts and an even share of the interval."""
    per_session = max(1, int(duration // interval))
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:8]
    return [
        Session(i, [rng.choice(pool) for _ in range(per_session)], interval * i / count, run_id)
        for i in range(count)
    ]


# -- processes: memory and CPU -----------------------------------------------------------------


def proc_status_mb(pid: int, name: str) -> float | None:
    """A memory figure of /proc/<pid>/status (``VmRSS``, ``VmHWM``) in MB; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(f"{name}:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def rss_mb(pid: int) -> float | None:
    """The resident set size of ``pid`` in MB (VmRSS), None if it is gone."""
    return proc_status_mb(pid, "VmRSS")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` (all its threads), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid``."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children += [int(c) for c in (task / "children").read_text().split()]
    return children


def find_redis_child(pid: int) -> int | None:
    """The redis-server that ``pid`` started (its private Redis), if any."""
    for child in child_pids(pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/comm").read_text().strip().startswith("redis-server"):
                return child
    return None


class ProcessWatch:
    """Samples the RSS of named processes every second and reads their CPU time.

    Args:
        pids: name (``service``, ``redis``) -> pid.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def sample(self) -> dict[str, float]:
        """Read every RSS now; returns them (MB) and keeps the peaks."""
        now: dict[str, float] = {}
        for name, pid in self.pids.items():
            value = rss_mb(pid)
            if value is not None:
                now[name] = value
                self.peak[name] = max(self.peak.get(name, 0.0), value)
        self.last = now
        return now

    def cpu(self) -> dict[str, float]:
        """CPU seconds of every process so far."""
        return {name: s for name, pid in self.pids.items() if (s := cpu_seconds(pid)) is not None}

    async def run(self, period: float = 1.0) -> None:
        """Sample every ``period`` seconds until cancelled."""
        while True:
            self.sample()
            await asyncio.sleep(period)


# -- the service, when --start -----------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ManagedService:
    """``baton serve`` as a subprocess: a free port, BATON_DATA_DIR in a temporary folder.

    Without ``redis_url`` the service starts its own private Redis there (its default), and
    its URL is read from the service's output.
    """

    def __init__(self, kb: Path, model_dir: Path, redis_url: str | None, keep: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="baton-web-load-"))
        self.log_path = self.data_dir / "service.log"
        self.redis_url = redis_url
        self.keep = keep
        baton = Path(sys.executable).parent / "baton"
        program = [str(baton)] if baton.exists() else [sys.executable, "-m", "api.cli"]
        self.command = [
            *program,
            "serve",
            "--kb",
            str(kb),
            "--model-dir",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.redis_pid: int | None = None

    def describe(self) -> str:
        """The command and environment, as one shell line."""
        redis = f"REDIS_URL={shlex.quote(self.redis_url)} " if self.redis_url else ""
        return f"BATON_DATA_DIR={self.data_dir} {redis}{shlex.join(self.command)}"

    def start(self, timeout: float) -> None:
        """Start the service and wait until ``GET /healthz`` answers 200.

        Raises:
            BenchmarkError: it exited, or was not ready within ``timeout`` seconds.
        """
        env = dict(os.environ, BATON_DATA_DIR=str(self.data_dir))
        for name in ("REDIS_URL", "BATON_REDIS_URL"):
            env.pop(name, None)
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchmarkError(
                    f"the service exited with status {self.process.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise BenchmarkError(f"the service was not ready after {timeout:g} s:\n{self.log_tail()}")
        if not self.redis_url:
            found = PRIVATE_REDIS.search(self.log_path.read_text(encoding="utf-8", errors="replace"))
            self.redis_url = found.group(1) if found else None
        self.redis_pid = find_redis_child(self.process.pid)

    def pids(self) -> dict[str, int]:
        """The service's pid and its private Redis's, for `ProcessWatch`."""
        assert self.process is not None
        pids = {"service": self.process.pid}
        if self.redis_pid is not None:
            pids["redis"] = self.redis_pid
        return pids

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the service's output."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 30.0) -> None:
        """Ctrl-C the service (it stops its Redis); kill what is left after ``grace`` seconds."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.redis_pid is not None and rss_mb(self.redis_pid) is not None:
            time.sleep(1.0)  # the service's own shutdown stops it; give it a moment
            with contextlib.suppress(ProcessLookupError):
                if rss_mb(self.redis_pid) is not None:
                    os.kill(self.redis_pid, signal.SIGTERM)
        if not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)


# -- the store check ---------------------------------------------------------------------------


async def check_store(redis_url: str, prefix: str, sessions: Sequence[Session]) -> dict[str, Any]:
    """Read every session's conversations back from Redis and count what does not hold.

    Holds when: the stored customer turns are exactly the messages the session sent and the
    service accepted, once each and in order; each is followed by exactly one bot turn; seqs
    run 1, 2, 3, ... with no gap. Also collects the service's own timings kept with the turns
    (``nlu_ms`` of each message, ``reply_ms`` of each bot turn: from the start of the bot's turn to
    its reply being stored), to tell time spent in the service from time spent around it.
    """
    problems: Counter[str] = Counter()
    timings: dict[str, list[float]] = {"nlu_ms": [], "reply_ms": []}
    checked = 0
    async with Redis.from_url(redis_url, decode_responses=True) as redis:
        for session in sessions:
            records: list[dict[str, Any]] = []
            for conversation in session.conversations:
                raw = await redis.lrange(f"{prefix}conv:{conversation}:turns", 0, -1)
                if not raw:
                    problems["conversation_missing"] += 1
                turns = [json.loads(r) for r in raw]
                if [t.get("seq") for t in turns] != list(range(1, len(turns) + 1)):
                    problems["seq_gap"] += 1
                records += turns
                checked += 1
            for turn in records:
                for name, values in timings.items():
                    value = (turn.get("timings") or {}).get(name)
                    if isinstance(value, int | float):
                        values.append(value / 1000)
            expected = [
                m.client_message_id for m in session.messages if not m.send_failed and m.error is None
            ]
            stored = [t.get("client_message_id") for t in records if t.get("sender") == "customer"]
            counts, sent = Counter(stored), set(expected)
            problems["message_missing"] += sum(1 for cid in expected if counts[cid] == 0)
            problems["message_stored_twice"] += sum(n - 1 for n in counts.values() if n > 1)
            problems["message_not_sent_by_session"] += sum(1 for cid in counts if cid not in sent)
            stored_order = [cid for cid in dict.fromkeys(stored) if cid in sent]
            if stored_order != [cid for cid in expected if counts[cid]]:
                problems["out_of_order"] += 1
            customer_seqs = {t.get("seq") for t in records if t.get("sender") == "customer"}
            answers = Counter(t.get("reply_to") for t in records if t.get("sender") == "bot")
            problems["message_without_bot_turn"] += sum(1 for seq in customer_seqs if answers[seq] == 0)
            problems["message_answered_twice"] += sum(
                n - 1 for seq, n in answers.items() if seq in customer_seqs and n > 1
            )
            problems["bot_turn_answering_no_message"] += sum(
                n for seq, n in answers.items() if seq not in customer_seqs
            )
    found = {k: v for k, v in problems.items() if v}
    return {
        "checked_conversations": checked,
        "problems": found,
        "ok": not found,
        "service_timings_ms": {name: distribution(values) for name, values in timings.items()},
    }


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything measured in one run, before it is summarised."""

    sessions: list[Session]
    t0: float
    t_end: float  # the load window: t0 to the moment every reply had come (or timed out)
    cpu_start: dict[str, float]
    cpu_end: dict[str, float]
    cpu_window: float  # seconds between the two CPU readings
    rss_idle: dict[str, float]  # ready, before any session opened
    rss_end: dict[str, float]
    rss_peak: dict[str, float]
    store: dict[str, Any]


async def run_load(args: argparse.Namespace, url: str, pids: dict[str, int], redis_url: str | None) -> Run:
    """Open every session, run the load, drain, close, and check the store."""
    pool = load_message_file(args.messages) if args.messages else load_dev_messages(DEV_SETS, args.excluded)
    if not pool:
        raise BenchmarkError("no messages to send")
    sessions = build_sessions(args.sessions, args.interval, args.duration, pool, args.seed)
    ws_base = "ws" + url.removeprefix("http")
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(session: Session, http: httpx.AsyncClient) -> None:
        async with gate:
            await session.open(http, ws_base, args.timeout)

    watch = ProcessWatch(pids)
    rss_idle = watch.sample()
    sampler = asyncio.create_task(watch.run())
    async with httpx.AsyncClient(base_url=url) as http:
        try:
            await asyncio.gather(*(open_one(s, http) for s in sessions))
        except (OSError, httpx.HTTPError, TimeoutError, ConnectionClosed) as exc:
            sampler.cancel()
            await asyncio.gather(sampler, *(s.close() for s in sessions), return_exceptions=True)
            raise BenchmarkError(f"could not open the sessions: {exc!r}") from exc

    t0 = time.perf_counter() + 0.5
    cpu_t0 = time.perf_counter()
    cpu_start = {**watch.cpu(), "load_generator": time.process_time()}
    await asyncio.gather(*(s.send_all(t0, args.interval) for s in sessions))
    while any(s.waiting(time.perf_counter(), args.timeout) for s in sessions):
        await asyncio.sleep(0.05)
    t_end = time.perf_counter()
    cpu_end = {**watch.cpu(), "load_generator": time.process_time()}
    cpu_window = time.perf_counter() - cpu_t0
    await asyncio.sleep(SETTLE_SECONDS)
    rss_end = watch.sample()
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    await asyncio.gather(*(s.close() for s in sessions))

    if redis_url:
        store = await check_store(redis_url, args.redis_prefix, sessions)
    else:
        store = {"skipped": "no --redis-url given: the stored turns were not checked"}
    return Run(sessions, t0, t_end, cpu_start, cpu_end, cpu_window, rss_idle, rss_end, watch.peak, store)


# -- the report --------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def distribution(values: Iterable[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max, in ms, of values in seconds."""
    ms = sorted(v * 1000 for v in values)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {
        "p50": rounded(percentile(ms, 50)),
        "p90": rounded(percentile(ms, 90)),
        "p99": rounded(percentile(ms, 99)),
        "max": rounded(ms[-1] if ms else None),
    }


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, Python, and how busy the machine was at the start."""
    model, memory = "unknown", None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = round(int(line.split()[1]) / 1024**2, 1)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": memory,
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def summarise(args: argparse.Namespace, run: Run, service: str, host: dict[str, Any]) -> dict[str, Any]:
    """The figures of a run, as one JSON-ready dict."""
    messages = [m for s in run.sessions for m in s.messages]
    sent = [m for m in messages if not m.send_failed]
    lost = Counter(o for m in messages if (o := m.outcome(args.timeout)) is not None)
    undelivered = sum(s.undelivered_turns() for s in run.sessions)
    if undelivered:
        lost["turn_not_delivered"] = undelivered
    duplicated = sum((s.duplicated for s in run.sessions), Counter[str]())
    errors = sum((s.errors for s in run.sessions), Counter[str]())
    window = run.t_end - run.t0
    sent_times = sorted(m.sent_at for m in sent)
    sending = sent_times[-1] - sent_times[0] if len(sent_times) > 1 else 0.0
    cpu = {
        name: round(run.cpu_end[name] - run.cpu_start[name], 2)
        for name in run.cpu_end
        if name in run.cpu_start
    }
    latency = distribution(m.reply_at - m.sent_at for m in messages if m.reply_at is not None)
    store_ok = run.store.get("ok", True)
    return {
        "sessions": len(run.sessions),
        "interval_s": args.interval,
        "duration_s": args.duration,
        "messages_per_session": len(run.sessions[0].texts) if run.sessions else 0,
        "distinct_texts": len({t for s in run.sessions for t in s.texts}),
        "messages_sent": len(sent),
        "replies_received": sum(1 for m in messages if m.reply_at is not None),
        "lost": sum(lost.values()),
        "lost_detail": dict(lost),
        "duplicated": sum(duplicated.values()),
        "duplicated_detail": dict(duplicated),
        "errors": dict(errors),
        "escalated_sessions": sum(1 for s in run.sessions if s.state not in (None, "bot")),
        "sessions_stopped_early": sum(1 for s in run.sessions if s.stopped_early),
        "offered_messages_per_s": round(args.sessions / args.interval, 2),
        "messages_per_s": round((len(sent) - 1) / sending, 2) if sending > 0 else None,
        "sending_s": round(sending, 2),
        "load_window_s": round(window, 2),
        "latency_ms": latency,
        "ack_latency_ms": distribution(m.ack_at - m.sent_at for m in messages if m.ack_at is not None),
        "send_lag_ms": distribution(max(0.0, m.sent_at - m.due) for m in sent),
        "targets": {
            "p50_ms": TARGET_P50_MS,
            "p99_ms": TARGET_P99_MS,
            "p50_met": latency["p50"] is not None and latency["p50"] <= TARGET_P50_MS,
            "p99_met": latency["p99"] is not None and latency["p99"] <= TARGET_P99_MS,
        },
        "service_peak_rss_mb": _mb(run.rss_peak.get("service")),
        "service_rss_mb": _rss(run, "service"),
        "redis_peak_rss_mb": _mb(run.rss_peak.get("redis")),
        "redis_rss_mb": _rss(run, "redis"),
        "cpu_seconds": cpu,
        "cpu_cores_used": {k: round(v / run.cpu_window, 2) for k, v in cpu.items()},
        "store_check": run.store,
        "machine": host,
        "service": service,
        "command": command_line(),
        "ok": not lost and not duplicated and bool(store_ok),
    }


def _mb(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _rss(run: Run, name: str) -> dict[str, float | None]:
    return {
        "idle": _mb(run.rss_idle.get(name)),
        "peak": _mb(run.rss_peak.get(name)),
        "end": _mb(run.rss_end.get(name)),
    }


def command_line() -> str:
    """This benchmark's command line, as it can be typed again from the repository root."""
    python = os.path.relpath(sys.executable, ROOT)
    if python.startswith(".."):
        python = sys.executable
    return shlex.join([python, os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def print_report(r: dict[str, Any]) -> None:
    """The figures as text, for a person."""
    host, lat, store = r["machine"], r["latency_ms"], r["store_check"]

    def ms(d: dict[str, float | None], key: str) -> str:
        return "-" if d[key] is None else f"{d[key]:.1f} ms"

    def met(flag: bool) -> str:
        return "met" if flag else "NOT met"

    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

    def rss(d: dict[str, float | None]) -> str:
        def one(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f} MB"

        return f"{one(d['idle'])} idle, peak {one(d['peak'])}, {one(d['end'])} at the end"

    cores = r["cpu_cores_used"]
    lines = [
        "Baton web chat load benchmark",
        f"  command:   {r['command']}",
        f"  service:   {r['service']}",
        f"  machine:   {host['nproc']} cores ({host['cpu_model']}), {host['memory_gb']} GB, "
        f"Python {host['python']}, load average at start {' '.join(map(str, host['load_average']))}",
        f"  load:      {r['sessions']} sessions x {r['messages_per_session']} messages, one every "
        f"{r['interval_s']:g} s each ({r['offered_messages_per_s']:g} msg/s offered), "
        f"{r['distinct_texts']} distinct texts",
        f"  sent:      {r['messages_sent']} messages over {r['sending_s']:.1f} s, {r['messages_per_s']} msg/s; "
        f"send lag p99 {ms(r['send_lag_ms'], 'p99')}, max {ms(r['send_lag_ms'], 'max')}",
        f"  replies:   {r['replies_received']} received",
        f"  lost:      {r['lost']} ({counts(r['lost_detail'])})",
        f"  duplicated: {r['duplicated']} ({counts(r['duplicated_detail'])})",
        f"  errors:    {counts(r['errors'])}",
        f"  latency:   reply p50 {ms(lat, 'p50')} (target <= {TARGET_P50_MS:g} ms: {met(r['targets']['p50_met'])}), "
        f"p90 {ms(lat, 'p90')}, p99 {ms(lat, 'p99')} (target <= {TARGET_P99_MS:g} ms: "
        f"{met(r['targets']['p99_met'])}), max {ms(lat, 'max')}",
        f"             ack p50 {ms(r['ack_latency_ms'], 'p50')}, p99 {ms(r['ack_latency_ms'], 'p99')}",
    ]
    if "service_timings_ms" in store:
        nlu, reply = store["service_timings_ms"]["nlu_ms"], store["service_timings_ms"]["reply_ms"]
        lines.append(
            f"             in the service (stored timings): NLU p50 {ms(nlu, 'p50')}, p99 {ms(nlu, 'p99')}; "
            f"bot turn p50 {ms(reply, 'p50')}, p99 {ms(reply, 'p99')}"
        )
    if "skipped" in store:
        lines.append(f"  store:     not checked ({store['skipped']})")
    elif store["ok"]:
        lines.append(
            f"  store:     {store['checked_conversations']} conversations read back from Redis: every "
            "message stored once, in order, each answered by exactly one bot turn"
        )
    else:
        lines.append(
            f"  store:     {store['checked_conversations']} conversations read back, PROBLEMS: "
            f"{counts(store['problems'])}"
        )
    if r["service_rss_mb"]["peak"] is not None:
        lines.append(f"  memory:    service RSS {rss(r['service_rss_mb'])}")
        if r["redis_rss_mb"]["peak"] is not None:
            lines.append(f"             redis-server RSS {rss(r['redis_rss_mb'])}")
    else:
        lines.append("  memory:    not measured (give --pid, or use --start)")
    lines.append(
        "  CPU:       " + ", ".join(f"{k} {v:.2f} cores" for k, v in cores.items()) + " over the load window"
    )
    if r["escalated_sessions"]:
        lines.append(
            f"  WARNING:   {r['escalated_sessions']} conversation(s) left the bot (a person was asked for); "
            f"{r['sessions_stopped_early']} session(s) stopped sending, so the load was lower than offered"
        )
    lines.append(
        "  result:    OK: nothing lost or duplicated"
        if r["ok"]
        else "  result:    FAILED: messages were lost or duplicated (see above)"
    )
    print("\n".join(lines))


# -- the command line --------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring, printed by --help)."""
    p = argparse.ArgumentParser(
        prog="bench/web_load.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--start",
        action="store_true",
        help="start `baton serve` for the run (a free port, BATON_DATA_DIR in a temporary folder, "
        "its own private Redis unless --redis-url) and stop it at the end",
    )
    target.add_argument("--url", help="a service that is already running, e.g. http://127.0.0.1:8000")
    p.add_argument("--sessions", type=int, default=200, help="concurrent web sessions (default 200)")
    p.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="seconds between two messages of one session (default 2; the service allows 20 per 10 s "
        "per visitor, so below 0.5 its rate limit refuses messages)",
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds within which a message must be acknowledged and answered, else it is lost (default 10)",
    )
    p.add_argument(
        "--messages",
        type=Path,
        help="a text file, one message per line (default: the held-out dev sets, see above)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the random choice of texts (default 1)")
    p.add_argument(
        "--redis-url",
        help="the service's Redis, for the store check (with --start: passed to the service as REDIS_URL; "
        "default there: its private Redis)",
    )
    p.add_argument(
        "--redis-prefix", default="baton:", help="the service's BATON_REDIS_PREFIX (default baton:)"
    )
    p.add_argument("--pid", type=int, help="with --url: the service's pid, to report its memory and CPU")
    p.add_argument(
        "--kb", type=Path, default=Path("nlu_data"), help="with --start: knowledge base (default nlu_data)"
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=Path("var/models"),
        help="with --start: models folder (default var/models, which holds nlu_data's model; "
        "without a current model the service trains first, about 35 s)",
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=300.0,
        help="with --start: seconds to wait for /healthz (default 300)",
    )
    p.add_argument(
        "--keep-data",
        action="store_true",
        help="with --start: keep the temporary folder (service.log, Redis)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    return p


def run_event_loop(coroutine: Any) -> Any:
    """Run ``coroutine`` on uvloop when it is installed (less overhead per frame), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    args = parser().parse_args(argv)
    if args.sessions < 1 or args.interval <= 0 or args.duration < args.interval or args.timeout <= 0:
        sys.exit("error: need --sessions >= 1, --interval > 0, --duration >= --interval, --timeout > 0")
    kb = args.kb if args.kb.is_absolute() else ROOT / args.kb
    model_dir = args.model_dir if args.model_dir.is_absolute() else ROOT / args.model_dir
    args.excluded = set(EXCLUDED_INTENTS) | sensitive_intents(kb)
    host = machine()  # before the service starts: how busy the machine was on its own
    managed: ManagedService | None = None
    try:
        if args.start:
            managed = ManagedService(kb, model_dir, args.redis_url, args.keep_data)
            print(f"starting: {managed.describe()}", file=sys.stderr, flush=True)
            managed.start(args.start_timeout)
            url, pids, redis_url = managed.url, managed.pids(), managed.redis_url
            service = f"started by the benchmark: {managed.describe()}"
        else:
            url, redis_url = args.url.rstrip("/"), args.redis_url
            pids = {"service": args.pid} if args.pid else {}
            if args.pid and (redis := find_redis_child(args.pid)) is not None:
                pids["redis"] = redis
            service = f"already running at {url}"
            try:
                httpx.get(f"{url}/healthz", timeout=5).raise_for_status()
            except httpx.HTTPError as exc:
                raise BenchmarkError(f"{url}/healthz does not answer 200: {exc}") from exc
        print(
            f"running: {args.sessions} sessions, one message every {args.interval:g} s each, "
            f"for {args.duration:g} s ...",
            file=sys.stderr,
            flush=True,
        )
        run = run_event_loop(run_load(args, url, pids, redis_url))
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if managed is not None:
            if args.keep_data:
                print(f"service output: {managed.log_path}", file=sys.stderr)
            managed.stop()
    report = summarise(args, run, service, host)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print_report(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
