"""What the WeChat channel keeps in Redis, shared by every replica: who can still be reached, which
message was seen, which turn went out, the quick replies a follower can answer by number.

WeChat lets an account write to a follower through the customer-service API only within 48
hours of the follower's last message or action; `WeChatState.touch` starts that window again.
"""

from __future__ import annotations

import json
import time

from redis.asyncio import Redis

WINDOW_SECONDS = 48 * 3600  # WeChat's customer-service window after a follower's last action
SEEN_MESSAGE_SECONDS = 600  # WeChat retries within seconds; a message id is kept for 10 minutes
DELIVERED_SECONDS = 7 * 86400  # how long "this turn went out" is remembered
CONVERSATION_SECONDS = 30 * 86400
BUTTONS_SECONDS = 86400  # numbered quick replies stay answerable for a day


class WeChatState:
    """The channel's Redis keys, under ``{prefix}wechat:``."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self.client = client
        self.base = f"{prefix}wechat:"

    async def first_sight(self, key: str) -> bool:
        """True the first time a message (or event) key is seen; False for WeChat's retries."""
        return bool(await self.client.set(f"{self.base}msg:{key}", "1", nx=True, ex=SEEN_MESSAGE_SECONDS))

    async def touch(self, openid: str, conversation_id: str | None = None) -> None:
        """The follower just wrote or acted: the 48-hour window starts again."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(f"{self.base}seen:{openid}", str(time.time()), ex=WINDOW_SECONDS)
            if conversation_id:
                pipe.set(f"{self.base}conv:{conversation_id}", openid, ex=CONVERSATION_SECONDS)
            await pipe.execute()

    async def reachable(self, openid: str) -> bool:
        """True while the follower's 48-hour window is open."""
        return bool(await self.client.exists(f"{self.base}seen:{openid}"))

    async def openid_of(self, conversation_id: str) -> str | None:
        """The follower a WeChat conversation belongs to."""
        return await self.client.get(f"{self.base}conv:{conversation_id}")

    async def claim(self, turn_id: str, how: str) -> bool:
        """True for the one caller (passive reply or outbox, in any replica) that sends this turn."""
        return bool(await self.client.set(f"{self.base}out:{turn_id}", how, nx=True, ex=DELIVERED_SECONDS))

    async def forget_message(self, key: str) -> None:
        """Handling the message failed: let WeChat's retry of it be handled."""
        await self.client.delete(f"{self.base}msg:{key}")

    async def claimed_by(self, turn_id: str) -> str | None:
        """Who took the turn: ``passive``, an outbox's claim, ``sent`` once it went out; None if nobody."""
        return await self.client.get(f"{self.base}out:{turn_id}")

    async def sent(self, turn_id: str) -> None:
        """The turn went out (or became a note): no outbox sends it again."""
        await self.client.set(f"{self.base}out:{turn_id}", "sent", ex=DELIVERED_SECONDS)

    async def open_passive(self, conversation_id: str, seq: int, seconds: float) -> None:
        """A callback is waiting to answer customer turn ``seq`` passively for up to ``seconds``."""
        key = f"{self.base}passive:{conversation_id}"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, str(seq), "1")
            pipe.pexpire(key, int(seconds * 1000))
            await pipe.execute()

    async def close_passive(self, conversation_id: str, seq: int) -> None:
        """The callback has answered (or given up): its turn's replies may go out the other way."""
        await self.client.hdel(f"{self.base}passive:{conversation_id}", str(seq))

    async def passive_open(self, conversation_id: str) -> bool:
        """True while a callback may still answer a message of the conversation passively: anything
        else for it waits, so the follower reads the replies in order."""
        return bool(await self.client.hlen(f"{self.base}passive:{conversation_id}"))

    async def offer(self, openid: str, payloads: list[str]) -> None:
        """Remember the quick replies just sent, so the follower can answer "2" for the second."""
        key = f"{self.base}buttons:{openid}"
        if payloads:
            await self.client.set(key, json.dumps(payloads, ensure_ascii=False), ex=BUTTONS_SECONDS)
        else:
            await self.client.delete(key)

    async def offered(self, openid: str) -> list[str]:
        """The quick replies last offered to the follower (empty if none or expired)."""
        raw = await self.client.get(f"{self.base}buttons:{openid}")
        return json.loads(raw) if raw else []
