"""What every Redis-backed component shares: how a client connects, and a client it may own.

`connect` is the one way Baton's processes make a client, so every one of them rides out a Redis
restart the same way: a command that fails because its pooled connection died with the old
server is sent again on a new connection, a few times with a short backoff, instead of failing
the request. Baton's writes are safe to send twice (idempotency keys, compare-and-set marks,
check-and-set scripts), which is what makes the retry harmless.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

RETRIES = 6  # with the backoff below, about 1.5 s of Redis being away before a command fails


def retry_policy() -> dict[str, Any]:
    """The connection settings that make a client retry a command on a dead connection."""
    return {
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.02), RETRIES),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError, OSError],  # OSError: socket errors
    }


def connect(url: str, *, max_connections: int | None = None, wait_seconds: float | None = None) -> Redis:
    """A ``redis.asyncio`` client for ``url`` (``decode_responses=True``) that rides out a restart.

    With ``max_connections``, its pool is a blocking one: under a burst a command waits up to
    ``wait_seconds`` for a free connection instead of failing at once.
    """
    if max_connections is None:
        return Redis.from_url(url, decode_responses=True, **retry_policy())
    pool = BlockingConnectionPool.from_url(
        url, decode_responses=True, max_connections=max_connections, timeout=wait_seconds, **retry_policy()
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes both


class RedisClientHolder:
    """Base for components built around a ``redis.asyncio`` client.

    A component made from a URL owns its client and closes it; one given a client leaves
    closing to whoever made it.
    """

    client: Redis
    _owns_client: bool

    async def aclose(self) -> None:
        """Close the client if this component created it."""
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
