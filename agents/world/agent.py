"""world.events + world.ticks (a batch consumer) + a tick timer -> per-world state (owned by
this worker) -> PostgreSQL (world_events, world_state, memories) -> cache.invalidations."""

from __future__ import annotations

import asyncio
import logging

import faust
from aiokafka.errors import KafkaError

from agents.context import Resources
from agents.world.consumer import WorldBatchConsumer
from agents.world.owner import WorldOwner
from runtime.metrics import MESSAGES_OUT, PROCESSING_SECONDS
from schemas import encode
from schemas.events import CacheInvalidation
from sinks.postgres.world import WorldStore
from sinks.retry import STOPPING, StoppingError, until_written
from topics.catalog import CACHE_INVALIDATIONS

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
        """The one owner of this worker's worlds, shared by the consumer and the timer (both
        ask for it at start-up, hence the lock)."""
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

    app.service(WorldBatchConsumer.bound_to(resources, world_owner))

    async def tick_active_worlds() -> None:
        if STOPPING.is_set():
            # The worker is stopping: the CPU is for finishing batches now. The next owner
            # derives the ticks skipped here from the stored schedule.
            return
        worlds = await world_owner()
        with PROCESSING_SECONDS.labels(agent="world-timer").time():
            try:
                await worlds.tick_due()
            except StoppingError as error:
                log.warning("world tick round: %s", error)
            except Exception:
                # Ticks are re-derived from the stored schedule, so the timer logs the failure
                # (the owner already dropped the worlds it could not write) and keeps going.
                log.exception("world tick round failed")

    if settings.world_tick_seconds > 0:
        period = min(0.1, settings.world_tick_seconds / 2)
        app.timer(interval=period, name="world-tick-timer")(tick_active_worlds)
