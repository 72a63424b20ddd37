"""world.events -> the worlds a batch loaded -> their hot entries into Redis: the cache-warming
flow, in a group of its own beside the world flow's. Bad input is the world flow's to
dead-letter (it reads the same records): here it is only counted and skipped. The offsets are
committed once the batch's worlds were tried, warmed or not (see `WarmingSink`)."""

from __future__ import annotations

import logging

from agents.context import Resources
from agents.intake import decoder
from agents.invalidation.config import InvalidationSettings
from agents.invalidation.hot_keys import worlds_to_warm
from agents.invalidation.warming import CacheWarmer, WarmingSink
from cache import CacheClient
from runtime.flow import Flow
from runtime.metrics import CACHE_WARMING
from runtime.sink import Sink
from runtime.source import Received, Record
from runtime.spec import ConsumerSpec
from schemas.events import WorldEvent
from topics.catalog import WORLD_EVENTS

log = logging.getLogger(__name__)

BAD_INPUT = "bad_input"  # the CACHE_WARMING outcome of a record that is no WorldEvent


def spec(config: InvalidationSettings) -> ConsumerSpec:
    return ConsumerSpec(
        "cache-warming",
        (WORLD_EVENTS.name,),
        # A burst of loads warms each world once per batch (`worlds_to_warm`).
        max_batch=500,
        window_seconds=0.2,
        stop_seconds=config.shutdown_seconds,
    )


WARMING = spec(InvalidationSettings())


async def skip_bad_input(record: Record, kind: str, reason: str) -> None:
    """The flow's dead-letter writer, which stores nothing: the world flow dead-letters the
    same record in its own group. Counted, so a skip is never silent."""
    CACHE_WARMING.labels(outcome=BAD_INPUT).inc()
    log.debug(
        "cache-warming: %s partition %d offset %d skipped (%s): %s",
        record.topic,
        record.partition,
        record.offset,
        kind,
        reason,
    )


def loaded_worlds(batch: list[Received[WorldEvent]]) -> list[str]:
    return worlds_to_warm(item.event for item in batch)


def declare(config: InvalidationSettings, sink: Sink[list[str]]) -> Flow[WorldEvent, list[str]]:
    return Flow(
        spec=spec(config),
        decode=decoder(WorldEvent, WORLD_EVENTS),
        dead_letter=skip_bad_input,
        handle=loaded_worlds,
        sinks=[sink],
    )


async def build(resources: Resources, config: InvalidationSettings) -> Flow[WorldEvent, list[str]]:
    # Its own client, without L1: warming only writes. The sink closes it after the loop stops.
    cache = CacheClient(resources.settings.redis_url, name="warming", l1=False)
    warmer = CacheWarmer(resources.databases, cache, config.warm_ttl_seconds)
    return declare(config, WarmingSink(warmer))
