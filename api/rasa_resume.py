"""Gives a Rasa conversation back to Rasa when the person Baton gave it to is done.

``action_baton_handoff`` pauses the Rasa conversation while a person has it (`api.rasa_bridge`).
When that handoff closes (the agent resolved it, handed it back to the bot, or a supervisor
closed it), this resumes the conversation through the Rasa server's API
(``POST /conversations/<sender id>/tracker/events``: ``resume``, then ``action_listen``), so the
customer's next message is the assistant's again instead of going unanswered.

Every replica hears the handoff's ``closed`` event; the one that takes the Rasa sender id out of
Redis (GETDEL) resumes it, so it is resumed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import quote

import httpx
from redis.asyncio import Redis

from api.service import Service
from handoff.events import Event, HandoffChanged

log = logging.getLogger(__name__)

SENDER_KEPT_SECONDS = 30 * 86400  # a handoff left open longer than this is not resumed


def sender_key(prefix: str, conversation_id: str) -> str:
    """The Redis key that holds the Rasa sender id of a conversation handed over by Rasa."""
    return f"{prefix}rasa:sender:{conversation_id}"


async def remember_sender(redis: Redis, prefix: str, conversation_id: str, sender_id: str) -> None:
    """Note that ``conversation_id`` came from Rasa's ``sender_id``, to resume it when the handoff closes."""
    await redis.set(sender_key(prefix, conversation_id), sender_id, ex=SENDER_KEPT_SECONDS)


class RasaResumer:
    """Listens to the handoff events of ``service`` and resumes Rasa conversations whose handoff closed.

    Args:
        service: the running service (its Redis and event hub).
        url: the Rasa server (``BATON_RASA_URL``).
        token: its auth token, if it has one.
        timeout: seconds to wait for Rasa.
    """

    def __init__(self, service: Service, url: str, token: str | None, timeout: float = 5.0) -> None:
        self.service = service
        self.url = url.rstrip("/")
        self._params = {"token": token} if token else {}
        self._client = httpx.AsyncClient(timeout=timeout)
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start listening."""
        self.service.hub.listen_handoffs(self._events)
        self._task = asyncio.create_task(self._run(), name="rasa-resumer")

    async def stop(self) -> None:
        """Stop listening and close the HTTP client."""
        self.service.hub.forget_handoffs(self._events)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()

    async def _run(self) -> None:
        while True:
            event = await self._events.get()
            if isinstance(event, HandoffChanged) and event.kind == "closed":
                await self.resume(event.conversation_id)

    async def resume(self, conversation_id: str) -> bool:
        """Resume the Rasa conversation behind ``conversation_id``; False when there is none or Rasa failed."""
        redis = self.service.redis
        sender = await redis.getdel(sender_key(self.service.settings.redis_prefix, conversation_id))
        if not sender:
            return False  # not from Rasa, or another replica resumed it
        path = f"/conversations/{quote(str(sender), safe='')}/tracker/events"
        # action_baton_handoff paused the conversation from inside its turn, so Rasa never went
        # back to listening; without action_listen its rules misread the customer's next message.
        body: list[dict[str, Any]] = [{"event": "resume"}, {"event": "action", "name": "action_listen"}]
        try:
            answer = await self._client.post(self.url + path, params=self._params, json=body)
            answer.raise_for_status()
        except httpx.HTTPError as exc:
            # The customer is not trapped: Rasa's own API (or a restart of the conversation) resumes it.
            log.warning("could not resume Rasa conversation %s after its handoff: %s", sender, exc)
            return False
        log.info("resumed Rasa conversation %s: its handoff closed", sender)
        return True
