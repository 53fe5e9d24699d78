"""The running service's parts, built once at start-up and shared by every route."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from agent_assist.suggestions import ReplySuggester
from api.auth import load_or_create_secret, rasa_token
from api.channels.base import ChannelAdapter
from api.events import EventHub
from api.inbox_worker import InboxWorker
from api.nlu_worker import NLUWorker
from api.pipeline import TurnPipeline
from api.ratelimit import RateLimiter
from api.settings import Settings
from bot.dialogue import DialoguePolicy
from bot.nlu.fallback import FallbackEngine
from bot.nlu.rasa_client import RasaNLU, RasaUnavailable
from bot.nlu.types import BatchParser
from bot.orders import DemoOrderConnector
from bot.trained import TrainedBot
from conversations.redis_client import connect
from conversations.store import ConversationStore
from conversations.streams import Inbox
from handoff.agents import AgentDirectory
from handoff.assigner import Assigner
from handoff.desk import HandoffDesk
from handoff.events import Understood
from handoff.package import PackageBuilder
from handoff.parts import build_handoff
from handoff.queue import HANDOFF_EVENTS, HandoffQueue
from handoff.sentiment import SentimentScorer
from handoff.signals import EscalationPolicy
from knowledge_index.handoff_file import HandoffConfig

log = logging.getLogger(__name__)

REDIS_CONNECTIONS = 200  # per process; Redis itself takes 10,000 clients
REDIS_WAIT_SECONDS = 10.0  # the longest a request waits for a free connection before it fails


def nlu_engine(settings: Settings, bot: TrainedBot) -> BatchParser:
    """Baton's own engine, or (``BATON_NLU_ENGINE=rasa``) the Rasa server with Baton's engine
    standing in whenever Rasa is down or slow."""
    if settings.nlu_engine != "rasa":
        return bot.nlu
    rasa = RasaNLU(settings.rasa_url, rasa_token(settings), settings.rasa_timeout_seconds)
    if not rasa.ready():  # not fatal: Rasa may start after Baton; the fallback covers the gap
        log.warning("Rasa at %s is not ready yet; Baton's engine answers until it is", settings.rasa_url)
    return FallbackEngine(
        rasa, bot.nlu, (RasaUnavailable,), settings.rasa_retry_seconds, name=f"rasa at {settings.rasa_url}"
    )


@dataclass
class Service:
    """Everything a request handler needs: settings, store, bot pipeline, handoff desk, event hub, secrets.

    Attributes:
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
    agents: AgentDirectory
    queue: HandoffQueue
    desk: HandoffDesk
    packages: PackageBuilder
    suggester: ReplySuggester
    channels: dict[str, ChannelAdapter] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def start(cls, settings: Settings, bot: TrainedBot, redis_url: str) -> Service:
        """Connect to Redis, seed the demo orders and agents, start the NLU worker, the event
        hub, the inbox worker and the handoff assigners."""
        # A blocking pool: under a burst, a request waits for a free connection instead of failing
        # with "Too many connections" (redis-py's default pool refuses the 101st at once).
        redis = connect(redis_url, max_connections=REDIS_CONNECTIONS, wait_seconds=REDIS_WAIT_SECONDS)
        await redis.ping()
        prefix = settings.redis_prefix
        store = ConversationStore(redis, prefix=prefix)
        orders = DemoOrderConnector(redis, prefix=prefix)
        log.info("demo order connector: %d seed orders", await orders.seed())
        config = HandoffConfig.model_validate(bot.kb.handoff)
        desk = build_handoff(redis, store, config, routing=settings.routing)
        queue = desk.queue
        if settings.seed_demo_agents and (seeded := await desk.agents.seed_demo()):
            log.info(
                "created %d demo agents (see the README); set BATON_SEED_DEMO_AGENTS=false to stop", seeded
            )
        sentiment = await asyncio.to_thread(SentimentScorer.load, settings.data_dir / "sentiment")
        engine = await asyncio.to_thread(nlu_engine, settings, bot)  # asks Rasa whether it is ready
        nlu = NLUWorker(engine, settings.nlu_batch_size, settings.nlu_cache_size)
        limiter = RateLimiter(redis, prefix, settings.rate_limit_messages, settings.rate_limit_seconds)
        suggester = ReplySuggester(bot.kb, bot.index, bot.nlu.classifier.featurizer.encoder)

        async def order_lookup(number: str) -> dict[str, object] | None:
            order = await orders.lookup(number)
            return order.to_dict() if order else None

        packages = PackageBuilder(store, desk.records, suggester, order_lookup)

        async def understood(conversation_id: str, seq: int, nlu: dict[str, Any]) -> None:
            current = await queue.for_conversation(conversation_id)
            reasons = list(current.reasons) if current else []
            suggestions = await packages.suggestions(conversation_id, reasons)
            await queue.publish(Understood(conversation_id, seq, nlu, suggestions))

        replica = settings.replica_name or f"{socket.gethostname()}:{settings.port}"
        inbox = Inbox(redis, store.keys, replica)
        await inbox.ensure_group()
        pipeline = TurnPipeline(
            store,
            DialoguePolicy.for_bot(bot, orders),
            nlu,
            limiter,
            sentiment,
            EscalationPolicy(config),
            desk,
            inbox,
            understood,
            settings.max_message_chars,
        )
        hub = EventHub(redis, store.keys.events_pattern, handoff_channel=HANDOFF_EVENTS.format(prefix=prefix))
        await hub.start()
        if settings.secret_key is not None:
            web_secret = settings.secret_key.get_secret_value().encode()
        else:
            web_secret = load_or_create_secret(settings.data_dir / "secret_key")
        service = cls(
            settings,
            bot,
            redis,
            store,
            hub,
            pipeline,
            nlu,
            web_secret,
            desk.agents,
            queue,
            desk,
            packages,
            suggester,
        )
        worker = InboxWorker(inbox, pipeline.handle, reclaim_idle_ms=int(settings.reclaim_seconds * 1000))
        service._tasks.append(asyncio.create_task(worker.run(service._stopping), name="inbox"))
        for number in range(settings.assign_workers):
            assigner = Assigner(desk, consumer=f"{replica}:{number}")
            service._tasks.append(
                asyncio.create_task(assigner.run(service._stopping), name=f"assigner-{number}")
            )
        return service

    @property
    def app_secret(self) -> bytes | None:
        """The mobile app's shared secret, None when the app API is off."""
        if self.settings.app_key and self.settings.app_secret:
            return self.settings.app_secret.get_secret_value().encode()
        return None

    async def stop(self) -> None:
        """Stop the assigners, the hub and the NLU worker, close Redis."""
        self._stopping.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)
        await self.hub.stop()
        self.nlu.close()
        await self.redis.aclose()
