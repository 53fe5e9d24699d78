"""The running service's parts, built once at start-up and shared by every route."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from redis.asyncio import Redis

from api.auth import load_or_create_secret
from api.channels.base import ChannelAdapter
from api.events import EventHub
from api.nlu_worker import NLUWorker
from api.pipeline import TurnPipeline
from api.ratelimit import RateLimiter
from api.settings import Settings
from bot.dialogue import DialoguePolicy
from bot.orders import DemoOrderConnector
from bot.trained import TrainedBot
from conversations.store import ConversationStore

log = logging.getLogger(__name__)


@dataclass
class Service:
    """Everything a request handler needs: settings, store, bot pipeline, event hub, secrets.

    Attributes:
        web_sessions: customer id -> open web chat connections in this process.
        channels: the channel adapters by name (``web``, ``app``), added by `api.app`.
    """

    settings: Settings
    bot: TrainedBot
    redis: Redis
    store: ConversationStore
    hub: EventHub
    pipeline: TurnPipeline
    nlu: NLUWorker
    web_secret: bytes
    web_sessions: Counter[str] = field(default_factory=Counter)
    channels: dict[str, ChannelAdapter] = field(default_factory=dict)

    @classmethod
    async def start(cls, settings: Settings, bot: TrainedBot, redis_url: str) -> Service:
        """Connect to Redis, seed the demo orders, start the NLU worker and the event hub."""
        redis = Redis.from_url(redis_url, decode_responses=True)
        await redis.ping()
        store = ConversationStore(redis, prefix=settings.redis_prefix)
        orders = DemoOrderConnector(redis, prefix=settings.redis_prefix)
        log.info("demo order connector: %d seed orders", await orders.seed())
        nlu = NLUWorker(bot.nlu, settings.nlu_batch_size, settings.nlu_cache_size)
        limiter = RateLimiter(
            redis, settings.redis_prefix, settings.rate_limit_messages, settings.rate_limit_seconds
        )
        pipeline = TurnPipeline(
            store, DialoguePolicy.for_bot(bot, orders), nlu, limiter, settings.max_message_chars
        )
        hub = EventHub(redis, store.keys.events_pattern)
        await hub.start()
        if settings.secret_key is not None:
            web_secret = settings.secret_key.get_secret_value().encode()
        else:
            web_secret = load_or_create_secret(settings.data_dir / "secret_key")
        return cls(settings, bot, redis, store, hub, pipeline, nlu, web_secret)

    @property
    def app_secret(self) -> bytes | None:
        """The mobile app's shared secret, None when the app API is off."""
        if self.settings.app_key and self.settings.app_secret:
            return self.settings.app_secret.get_secret_value().encode()
        return None

    async def stop(self) -> None:
        """Stop the hub and the NLU worker, close Redis."""
        await self.hub.stop()
        self.nlu.close()
        await self.redis.aclose()
