"""Per-customer message rate limit in Redis (a sliding window, shared by every API replica)."""

from __future__ import annotations

import time
import uuid

from redis.asyncio import Redis

# KEYS[1] the customer's window (a sorted set of message stamps scored by time).
# ARGV[1] now (seconds), ARGV[2] window (seconds), ARGV[3] limit, ARGV[4] a unique member.
# Returns 0 when allowed (and counts the message), else the seconds until a slot frees up.
_HIT = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tostring(tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return '0'
"""


class RateLimiter:
    """At most ``limit`` messages per ``window`` seconds per customer.

    Args:
        client: a ``redis.asyncio.Redis`` (decode_responses=True).
        prefix: the key prefix (the store's).
        limit: messages allowed in a window.
        window: the window in seconds.
    """

    def __init__(self, client: Redis, prefix: str, limit: int, window: float) -> None:
        self.client = client
        self.prefix = prefix
        self.limit = limit
        self.window = window
        self._hit = client.register_script(_HIT)

    async def hit(self, customer_id: str) -> float:
        """Count a message; 0 if it is allowed, else the seconds to wait (the message is not counted)."""
        wait = await self._hit(
            keys=[f"{self.prefix}rate:{customer_id}"],
            args=[time.time(), self.window, self.limit, uuid.uuid4().hex],
        )
        return float(wait)
