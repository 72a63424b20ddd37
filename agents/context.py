"""What the agents share inside one worker: settings, the DLQ path, the PostgreSQL pool and
the Redis client. Connections open on first use and close when the worker shuts down."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import faust
import redis.asyncio as aioredis

from runtime.health import HealthChecks
from runtime.lag import ConsumerGroups
from runtime.settings import ResolvedSettings
from topics.catalog import TOPICS, TopicSpec
from topics.dlq import DeadLetters


class Resources:
    def __init__(self, app: faust.App, settings: ResolvedSettings) -> None:
        self.app = app
        self.settings = settings
        self.dead_letters = DeadLetters(app)
        # Flows add their components (providers, the CDN) next to Kafka, PostgreSQL and Redis.
        self.health = HealthChecks(worker=f"{settings.base.app_id}@{settings.base.web_port}")
        # Every consumer group the flows run, for the worker's one consumer-lag sampler.
        self.consumer_groups = ConsumerGroups()
        security = settings.base.security
        self.redis = aioredis.from_url(
            settings.redis_url,
            decode_responses=False,
            **security.redis.redis_kwargs(settings.redis_url),
        )
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        # Raw bytes in and out: decoding is ours, so bad input can reach the DLQ intact.
        self.topics = {
            spec.name: app.topic(
                spec.name,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
            )
            for spec in TOPICS
        }

    def topic(self, spec: TopicSpec) -> Any:
        return self.topics[spec.name]

    async def database(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.settings.database_url,
                    min_size=1,
                    max_size=8,
                    **self.settings.base.security.postgres.asyncpg_kwargs(),
                )
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await self.redis.aclose()
