"""Wiring: the invalidation consumer as a service of the worker (with its health check), and
cache warming as an agent on world.events."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import faust
import mode

from agents.context import Resources
from agents.invalidation.config import InvalidationSettings
from agents.invalidation.consumer import InvalidationConsumer, consumer_group
from agents.invalidation.delivery import Delivery
from agents.invalidation.hot_keys import worlds_to_warm
from agents.invalidation.warming import CacheWarmer
from cache import CacheClient
from runtime.health import Finding, Status
from runtime.metrics import CACHE_WARMING
from schemas import DecodeError, decode
from schemas.events import WorldEvent
from sinks.cdn import CdnPurger, CdnSettings
from sinks.redis import RETRYABLE, RedisInvalidator
from sinks.retry import until_written
from topics.catalog import WORLD_EVENTS


def register(app: faust.App, resources: Resources) -> None:
    settings = resources.settings
    config = InvalidationSettings.from_env()
    cdn_settings = CdnSettings.from_env(settings.base.cdn_url, settings.base.cdn_providers)
    warming_cache = CacheClient(settings.redis_url, l1=False)
    running: list[InvalidationConsumer] = []  # the consumer, once the service has built it

    async def consumer_health() -> Finding:
        if not running:
            return Finding(Status.DEGRADED, "starting: waiting for Redis")
        consumer = running[0]
        details = {"uncommitted": consumer.uncommitted, "paused": consumer.paused}
        if consumer.delivery.redis_down:
            return Finding(Status.DEGRADED, "Redis is down: partitions paused", details)
        if consumer.paused:
            return Finding(Status.DEGRADED, "backlog full: partitions paused", details)
        return Finding(Status.HEALTHY, "consuming", details)

    resources.health.add("invalidation", consumer_health, critical=False)

    @app.service
    class InvalidationFanOut(mode.Service):
        """Runs the invalidation consumer for as long as the worker runs."""

        consumer: InvalidationConsumer | None = None
        running: asyncio.Future[None] | None = None

        async def on_started(self) -> None:
            self.running = self.add_future(self._run())

        async def _run(self) -> None:
            redis = await until_written(
                "redis",
                RedisInvalidator.connect,
                settings.redis_url,
                settings.base.security.redis.redis_kwargs(settings.redis_url),
                retryable=RETRYABLE,
            )
            cdn = CdnPurger(cdn_settings) if cdn_settings is not None else None
            try:
                self.consumer = InvalidationConsumer(
                    kafka_settings=settings,
                    group_id=consumer_group(settings.base.app_id),
                    groups=resources.consumer_groups,
                    settings=config,
                    delivery=Delivery(redis, cdn, resources.dead_letters),
                    dead_letters=resources.dead_letters,
                )
                running.append(self.consumer)
                await self.consumer.run()
            finally:
                await redis.close()
                if cdn is not None:
                    await cdn.aclose()
                await warming_cache.close()

        async def on_stop(self) -> None:
            if self.consumer is not None:
                self.consumer.stop()
            if self.running is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(self.running), config.shutdown_seconds + 5
                    )

    # A second agent on world.events: Faust hands every message to both this one and the world
    # flow's. Bad input is the world flow's to dead-letter, so here it is only skipped.
    @app.agent(resources.topic(WORLD_EVENTS), name="cache-warming")
    async def warm_loaded_worlds(stream: Any) -> None:
        warmer = CacheWarmer(await resources.database(), warming_cache, config.warm_ttl_seconds)
        async for values in stream.take(500, within=0.2):
            events = []
            for value in values:
                if value is None:  # a tombstone: nothing to warm (the world flow dead-letters it)
                    continue
                with contextlib.suppress(DecodeError):
                    events.append(decode(value, WorldEvent))
            for world_id in worlds_to_warm(events):
                CACHE_WARMING.labels(outcome=await warmer.warm(world_id)).inc()
