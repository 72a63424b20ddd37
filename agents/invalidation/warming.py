"""Cache warming: when a world is loaded, put its hot entries into Redis from PostgreSQL.

Warming is a loader like any other: it writes through the cache client's lease guard, so it
never stores a state older than an invalidation that ran while it read. It is an optimization,
so a failure is counted and logged, and the cache fills on demand instead.

`WarmingSink` is the cache-warming flow's sink (`agents/invalidation/warming_flow.py`): it
warms the worlds of a batch, several at a time, and counts each outcome.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from agents.invalidation.hot_keys import hot_entries, world_tag
from cache import CacheClient
from cache.client import REDIS_ERRORS
from runtime.metrics import CACHE_WARMING
from sinks.postgres.databases import Databases

log = logging.getLogger(__name__)

# Worlds warmed at once. A world takes two PostgreSQL reads and three Redis calls per hot key,
# each waiting its turn on a worker's busy loop: one by one, a worker that loaded 5,000 worlds
# warmed ~40 a second and was still warming two minutes later.
WARM_CONCURRENCY = 16

WORLD_STATE_QUERY = (
    "SELECT world_id, version, tick, state, state_hash, updated_at "
    "FROM world_state WHERE world_id = $1"
)


class CacheWarmer:
    def __init__(self, databases: Databases, cache: CacheClient, ttl: float) -> None:
        # Read from the read replica while it is fresh enough, else from the primary.
        self.databases = databases
        self.cache = cache
        self.ttl = ttl

    async def _entries(self, world_id: str) -> dict[str, Any]:
        row = await self.databases.read(lambda pool: pool.fetchrow(WORLD_STATE_QUERY, world_id))
        return {} if row is None else hot_entries(dict(row))

    async def warm(self, world_id: str) -> str:
        """Warm one world; returns the outcome (a metric label)."""
        try:
            entries = await self._entries(world_id)
            if not entries:
                return "no_state"
            result = await self.cache.prime(
                list(entries),
                lambda: self._entries(world_id),
                ttl=self.ttl,
                tags=[world_tag(world_id)],
            )
        except asyncpg.UndefinedTableError:
            log.warning("cache warming: no world_state table yet; world %s not warmed", world_id)
            return "no_table"
        except (*REDIS_ERRORS, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("cache warming: world %s not warmed: %s", world_id, exc)
            return "failed"
        if result.filled:
            return "warmed"
        return "refused" if result.refused else "already_cached"


class WarmingSink:
    """Warms each world of a batch and counts the outcome. It never raises for a server that
    is down: the world is counted `failed` and the next one is tried, and the batch commits.
    Warming is best-effort and only saves a first read its miss; pushing back (pausing and
    retrying) would hold the group's offsets through an outage and then warm, all at once,
    worlds whose readers have long since filled the cache on demand."""

    def __init__(self, warmer: CacheWarmer, concurrency: int = WARM_CONCURRENCY) -> None:
        self.warmer = warmer
        self.concurrency = concurrency

    async def write(self, batch: list[str]) -> None:
        turns = asyncio.Semaphore(self.concurrency)

        async def warm(world_id: str) -> None:
            async with turns:
                CACHE_WARMING.labels(outcome=await self.warmer.warm(world_id)).inc()

        async with asyncio.TaskGroup() as group:
            for world_id in batch:
                group.create_task(warm(world_id))

    async def close(self) -> None:
        """Closes the warming cache client: the runtime calls it once the loop has stopped."""
        await self.warmer.cache.close()
