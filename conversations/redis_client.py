"""What every Redis-backed component shares: a client it may own, closed by ``aclose`` or ``async with``."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from redis.asyncio import Redis


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
