"""world.events + world.ticks + a tick timer -> per-world state (owned by this worker) ->
PostgreSQL (world_events, world_state, memories) -> cache.invalidations."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from aiokafka.errors import KafkaError

from agents.intake import decoded_batches
from agents.world.owner import WorldOwner
from schemas import encode
from schemas.events import CacheInvalidation, WorldEvent, WorldTick
from scribe.metrics import MESSAGES_OUT, PROCESSING_SECONDS
from scribe.resources import Resources
from sinks.postgres.world import WorldStore
from sinks.retry import until_written
from topics.catalog import CACHE_INVALIDATIONS, WORLD_EVENTS, WORLD_TICKS

log = logging.getLogger(__name__)


def register(app: faust.App, resources: Resources) -> None:
    settings = resources.settings.base
    owner: WorldOwner | None = None
    owner_lock = asyncio.Lock()

    async def publish(invalidations: list[CacheInvalidation]) -> None:
        async def send_all() -> None:
            futures = [
                await app.producer.send(
                    CACHE_INVALIDATIONS.name,
                    CACHE_INVALIDATIONS.key_of(item),
                    encode(item),
                    partition=None,
                    timestamp=None,
                    headers=None,
                )
                for item in invalidations
            ]
            for future in futures:
                await future

        await until_written("kafka.cache_invalidations", send_all, retryable=(KafkaError, OSError))
        MESSAGES_OUT.labels(topic=CACHE_INVALIDATIONS.name, agent="world").inc(len(invalidations))

    async def world_owner() -> WorldOwner:
        """The one owner of this worker's worlds, shared by both agents, the timer and the
        rebalance handlers (they all ask for it at start-up, hence the lock)."""
        nonlocal owner
        async with owner_lock:
            if owner is not None:
                return owner
            owner = WorldOwner(
                WorldStore(await resources.database()),
                publish,
                resources.dead_letters,
                tick_seconds=settings.world_tick_seconds,
                idle_seconds=settings.world_idle_seconds,
                catch_up=settings.world_catch_up_ticks,
                checkpoint_seconds=settings.world_checkpoint_seconds,
            )
            return owner

    @app.agent(resources.topic(WORLD_EVENTS), name="world-events")
    async def apply_world_events(stream: Any) -> None:
        worlds = await world_owner()
        async for batch in decoded_batches(
            stream, WORLD_EVENTS, WorldEvent, resources.dead_letters
        ):
            with PROCESSING_SECONDS.labels(agent="world-events").time():
                await worlds.apply_events(batch)

    @app.agent(resources.topic(WORLD_TICKS), name="world-ticks")
    async def apply_world_ticks(stream: Any) -> None:
        worlds = await world_owner()
        async for batch in decoded_batches(stream, WORLD_TICKS, WorldTick, resources.dead_letters):
            with PROCESSING_SECONDS.labels(agent="world-ticks").time():
                await worlds.apply_ticks(batch)

    async def tick_active_worlds() -> None:
        worlds = await world_owner()
        with PROCESSING_SECONDS.labels(agent="world-timer").time():
            try:
                await worlds.tick_due()
            except Exception:
                # Ticks are re-derived from the stored schedule, so the timer logs the failure
                # (the owner already dropped the worlds it could not write) and keeps going.
                log.exception("world tick round failed")

    if settings.world_tick_seconds > 0:
        period = min(0.1, settings.world_tick_seconds / 2)
        app.timer(interval=period, name="world-tick-timer")(tick_active_worlds)

    @app.on_partitions_assigned.connect
    async def _world_partitions_assigned(
        sender: Any, /, *args: Any, signal: Any, **kwargs: Any
    ) -> None:
        assigned = args[0]
        partitions = {tp.partition for tp in assigned if tp.topic == WORLD_EVENTS.name}
        count = app.consumer.topic_partitions(WORLD_EVENTS.name)
        (await world_owner()).assigned(partitions, count or settings.topic_partitions)

    @app.on_partitions_revoked.connect
    async def _world_partitions_revoked(
        sender: Any, /, *args: Any, signal: Any, **kwargs: Any
    ) -> None:
        revoked = args[0]
        partitions = {tp.partition for tp in revoked if tp.topic == WORLD_EVENTS.name}
        if partitions:
            await (await world_owner()).revoked(partitions)
