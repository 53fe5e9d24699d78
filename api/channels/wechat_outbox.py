"""The WeChat outbox: every bot, agent and system turn of a WeChat conversation that the callback
did not answer passively goes out through WeChat's customer-service message API.

Storing such a turn (any turn Baton writes while the customer's latest message came from WeChat)
also adds it to the stream ``P outbox:wechat`` in the same step (`conversations.scripts`), so
no reply is lost when a replica dies: each replica's outbox reads the stream as one consumer of
the group ``senders`` (`conversations.streams.TurnStream`), takes over the entries of a replica
that died (after ``BATON_RECLAIM_SECONDS``), and acknowledges an entry only once its turn went
out, was answered passively, or became a note. Each conversation's turns are sent in order
within a replica, and held while a callback may still answer a message of the conversation
passively (`WeChatState.open_passive`): the passive reply is free and immediate, so it goes
first, and what comes after it (a queue notice after "connecting you") follows it.

A turn is claimed before it is sent (`WeChatState.claim`): by the passive reply, or by an
outbox. An outbox that finds a turn claimed by an outbox but not sent (its sender died) sends it
again: at least once, since WeChat's API cannot say whether a send that was cut off went out.

Nothing is dropped silently: a follower outside WeChat's 48-hour window, or an error WeChat
returns, becomes an internal note on the conversation (the agent sees it at once on the desk),
and a WeChat outage is retried with backoff before it becomes one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from api.channels import wechat_texts
from api.channels.wechat_api import WeChatApi, WeChatApiError, WeChatUnavailable
from api.channels.wechat_state import WeChatState
from conversations import failpoints
from conversations.model import Turn
from conversations.store import ConversationStore
from conversations.streams import SENDERS, TurnEntry, TurnStream

log = logging.getLogger(__name__)

RETRY_DELAYS = (1.0, 3.0, 9.0)  # a WeChat outage: three more tries over about 13 s
PASSIVE_POLL_SECONDS = 0.1
READ_BLOCK_MS = 1000  # how long one read of the stream waits for new turns
RECLAIM_EVERY_SECONDS = 1.0
NOTE_AUTHOR = "wechat"

Note = Callable[[str, str], Awaitable[None]]  # (conversation id, text) -> an internal note, published


class WeChatOutbox:
    """Sends WeChat conversations' outgoing turns through the customer-service API.

    Args:
        api: WeChat's API client (access token, custom/send).
        state: the channel's shared state (windows, claims, passive replies).
        note: leaves an internal note for the agents of a conversation.
        store: the conversation store (its outbox stream, and the turns).
        consumer: this replica's name among the senders (the inbox's name).
        passive_seconds: the longest a callback waits to reply passively; the outbox waits a
            little longer for it at most.
        reclaim_idle_ms: a turn another replica took and has not sent after this long is taken over.
    """

    def __init__(
        self,
        api: WeChatApi,
        state: WeChatState,
        note: Note,
        store: ConversationStore,
        consumer: str,
        passive_seconds: float,
        reclaim_idle_ms: int,
    ) -> None:
        self.api = api
        self.state = state
        self.note = note
        self.store = store
        self.stream = TurnStream(store.client, store.keys.outbox("wechat"), SENDERS, consumer)
        self.passive_seconds = passive_seconds
        self.reclaim_idle_ms = reclaim_idle_ms
        # Callbacks in this process that may still reply passively, by conversation: the outbox
        # waits on these rather than asking Redis over and over.
        self.passive: dict[str, asyncio.Event] = {}
        self._lines: dict[str, asyncio.Queue[TurnEntry]] = {}
        self._taken: set[str] = set()  # entry ids in a line here, so a reclaim does not queue them twice
        self._workers: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        """Start reading the outbox stream."""
        self._task = asyncio.create_task(self._run(), name="wechat-outbox")

    async def stop(self) -> None:
        """Stop reading; turns still waiting stay pending for the other replicas (or this one's restart)."""
        self._stopping = True
        for task in [self._task, *self._workers]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(self) -> None:
        own = True
        next_reclaim = 0.0
        while True:
            try:
                if own:  # what this replica had taken when it stopped
                    await self.stream.ensure_group()
                    self._queue(await self.stream.own_pending(count=1000))
                    own = False
                if time.monotonic() >= next_reclaim:
                    self._queue(await self.stream.reclaim(self.reclaim_idle_ms))
                    next_reclaim = time.monotonic() + RECLAIM_EVERY_SECONDS
                self._queue(await self.stream.new(block_ms=READ_BLOCK_MS))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("wechat outbox: Redis unavailable (%s); retrying", exc)
                await asyncio.sleep(1)

    def _queue(self, entries: list[TurnEntry]) -> None:
        for entry in entries:
            if entry.entry_id not in self._taken:
                self._taken.add(entry.entry_id)
                self._line(entry.conversation_id).put_nowait(entry)

    def _line(self, conversation_id: str) -> asyncio.Queue[TurnEntry]:
        """The conversation's queue, with a worker that sends its turns in order."""
        line = self._lines.get(conversation_id)
        if line is None:
            line = self._lines[conversation_id] = asyncio.Queue()
            worker = asyncio.create_task(self._work(conversation_id, line), name=f"wechat-{conversation_id}")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return line

    async def _work(self, conversation_id: str, line: asyncio.Queue[TurnEntry]) -> None:
        try:
            while True:
                try:
                    entry = await asyncio.wait_for(line.get(), timeout=60)
                except TimeoutError:
                    return  # idle: the next turn starts a new worker
                try:
                    turn = await self._turn(entry)
                    if turn is None or await self._send(turn):
                        await self.stream.ack(entry.entry_id)
                except Exception:  # one turn must not stop the conversation's others; it stays pending
                    log.exception("wechat outbox: turn %s of %s", entry.seq, conversation_id)
                finally:
                    self._taken.discard(entry.entry_id)
        finally:
            if self._lines.get(conversation_id) is line:
                del self._lines[conversation_id]
            while not self._stopping and not line.empty():  # came as the worker gave up waiting
                self._line(conversation_id).put_nowait(line.get_nowait())

    async def _turn(self, entry: TurnEntry) -> Turn | None:
        turns = await self.store.turns(entry.conversation_id, after_seq=entry.seq - 1, limit=1)
        return turns[0] if turns and turns[0].seq == entry.seq else None

    async def _send(self, turn: Turn) -> bool:
        """Send ``turn`` unless the passive reply took it or it went out already (a note if it
        cannot go out); False when another outbox is sending it now (look again later)."""
        await self._wait_for_passive(turn.conversation_id)
        mine = f"outbox {self.stream.consumer} {time.time():.3f}"
        taken = await self.state.claimed_by(turn.id)
        if taken is None:
            taken = mine if await self.state.claim(turn.id, mine) else await self.state.claimed_by(turn.id)
        if taken is None or not taken.startswith("outbox "):
            return True  # answered passively (the usual case), or sent already
        owner, at = taken.removeprefix("outbox ").rsplit(" ", 1)
        recent = time.time() - float(at) < self.reclaim_idle_ms / 1000
        if taken != mine and owner != self.stream.consumer and recent:
            return False  # another replica took it moments ago: it may still be sending it
        # Here the claim is this call's, this replica's from before a restart, or a dead sender's.
        failpoints.reach("wechat_claimed")
        await self._deliver(turn)
        await self.state.sent(turn.id)
        return True

    async def _deliver(self, turn: Turn) -> None:
        openid = await self.state.openid_of(turn.conversation_id)
        if openid is None:
            log.warning("wechat outbox: no follower known for conversation %s", turn.conversation_id)
            return
        if not await self.state.reachable(openid):
            await self._undelivered(turn, wechat_texts.text("unreachable", turn.language, text=turn.text))
            return
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            await asyncio.sleep(delay)
            try:
                await self.api.send_text(openid, wechat_texts.render(turn))
            except WeChatUnavailable as exc:
                log.warning("wechat outbox: WeChat unreachable (try %d): %s", attempt + 1, exc)
                continue
            except WeChatApiError as exc:
                key = "unreachable" if exc.out_of_window else "not_delivered"
                await self._undelivered(
                    turn, wechat_texts.text(key, turn.language, text=turn.text, code=str(exc.errcode))
                )
                return
            failpoints.reach("wechat_sent")
            self.sent += 1
            await self.state.offer(openid, wechat_texts.payloads(turn))
            return
        await self._undelivered(
            turn, wechat_texts.text("not_delivered", turn.language, text=turn.text, code="unavailable")
        )

    async def _wait_for_passive(self, conversation_id: str) -> None:
        """Hold the conversation's turns while a callback may still send one of them passively."""
        limit = self.passive_seconds + 1.0
        local = self.passive.get(conversation_id)
        if local is not None:  # the callback is in this process: wait for its signal
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(local.wait(), timeout=limit)
            return
        # Another replica's callback, if any: ask the shared state now and then.
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and await self.state.passive_open(conversation_id):
            await asyncio.sleep(PASSIVE_POLL_SECONDS)

    async def _undelivered(self, turn: Turn, message: str) -> None:
        self.failed += 1
        log.warning("wechat outbox: turn %s of %s not delivered", turn.seq, turn.conversation_id)
        await self.note(turn.conversation_id, message)
