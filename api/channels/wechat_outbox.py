"""The WeChat outbox: every bot, agent and system turn of a WeChat conversation that the callback
did not answer passively goes out through WeChat's customer-service message API.

It follows every conversation event of this process's event hub, keeps each conversation's
turns in order, and holds them while a callback may still answer a message of the conversation
passively (`WeChatState.open_passive`): the passive reply is free and immediate, so it goes
first, and what comes after it (a queue notice after "connecting you") follows it. Each
turn is claimed once across replicas (`WeChatState.claim`) before it is sent.

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

from api.channels import wechat_texts
from api.channels.wechat_api import WeChatApi, WeChatApiError, WeChatUnavailable
from api.channels.wechat_state import WeChatState
from conversations.model import Turn
from handoff.events import Event, TurnStored

log = logging.getLogger(__name__)

SENT_BY = frozenset({"bot", "agent", "system"})
RETRY_DELAYS = (1.0, 3.0, 9.0)  # a WeChat outage: three more tries over about 13 s
PASSIVE_POLL_SECONDS = 0.1
NOTE_AUTHOR = "wechat"

Note = Callable[[str, str], Awaitable[None]]  # (conversation id, text) -> an internal note, published
# (conversation id, seq) -> the channel of the customer's latest turn before seq
LastChannel = Callable[[str, int], Awaitable[str | None]]


class WeChatOutbox:
    """Sends WeChat conversations' outgoing turns through the customer-service API.

    Args:
        api: WeChat's API client (access token, custom/send).
        state: the channel's shared state (windows, claims, passive replies).
        note: leaves an internal note for the agents of a conversation.
        last_channel: where the customer last wrote in a conversation (replies go there).
        passive_seconds: the longest a callback waits to reply passively; the outbox waits a
            little longer for it at most.
    """

    def __init__(
        self,
        api: WeChatApi,
        state: WeChatState,
        note: Note,
        last_channel: LastChannel,
        passive_seconds: float,
    ) -> None:
        self.api = api
        self.state = state
        self.note = note
        self.last_channel = last_channel
        self.passive_seconds = passive_seconds
        # Conversations begun on another channel that the customer continued on WeChat (after a
        # phone link joined them) in this process: their turns are WeChat's too while they write here.
        self.crossed: set[str] = set()
        # Callbacks in this process that may still reply passively, by conversation: the outbox
        # waits on these rather than asking Redis over and over.
        self.passive: dict[str, asyncio.Event] = {}
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._lines: dict[str, asyncio.Queue[Turn]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        """Start following ``events`` (the caller subscribes it to the hub)."""
        self._task = asyncio.create_task(self._run(), name="wechat-outbox")

    async def stop(self) -> None:
        """Stop following; turns still waiting are left to the other replicas' outboxes."""
        self._stopping = True
        for task in [self._task, *self._workers]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(self) -> None:
        while True:
            event = await self.events.get()
            if not isinstance(event, TurnStored):
                continue
            # Every conversation's turns come by: skip other channels' without parsing them.
            if '"channel":"wechat"' not in event.record and event.conversation_id not in self.crossed:
                continue
            try:
                turn = event.turn
            except (KeyError, TypeError, ValueError):
                log.warning("wechat outbox: ignored a malformed turn event")
                continue
            if turn.sender not in SENT_BY:
                continue
            if turn.channel != "wechat" and turn.conversation_id not in self.crossed:
                continue
            self._line(turn.conversation_id).put_nowait(turn)

    def _line(self, conversation_id: str) -> asyncio.Queue[Turn]:
        """The conversation's queue, with a worker that sends its turns in order."""
        line = self._lines.get(conversation_id)
        if line is None:
            line = self._lines[conversation_id] = asyncio.Queue()
            worker = asyncio.create_task(self._work(conversation_id, line), name=f"wechat-{conversation_id}")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return line

    async def _work(self, conversation_id: str, line: asyncio.Queue[Turn]) -> None:
        try:
            while True:
                try:
                    turn = await asyncio.wait_for(line.get(), timeout=60)
                except TimeoutError:
                    return  # idle: the next turn starts a new worker
                try:
                    await self._send(turn)
                except Exception:  # one turn must not stop the conversation's others
                    log.exception("wechat outbox: turn %s of %s", turn.seq, conversation_id)
        finally:
            if self._lines.get(conversation_id) is line:
                del self._lines[conversation_id]
            while not self._stopping and not line.empty():  # came as the worker gave up waiting
                self._line(conversation_id).put_nowait(line.get_nowait())

    async def _send(self, turn: Turn) -> None:
        await self._wait_for_passive(turn.conversation_id)
        if await self.state.claimed(turn.id):
            return  # sent passively (the usual case), or by another replica
        if await self.last_channel(turn.conversation_id, turn.seq) not in (None, "wechat"):
            return  # the customer now writes on another channel, which shows the turn itself
        if not await self.state.claim(turn.id, "outbox"):
            return  # the passive reply (or another replica) has it
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
