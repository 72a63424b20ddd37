"""cache.invalidations -> coalesced windows -> Redis + the L1 broadcast -> the CDN. Identical
targets read within one window (which stays open while the window before it is delivered, so
a burst merges more) become one removal and one purge. A light flow delivers at once; the
window is held open only under load (`AdaptiveWindow`). Offsets are committed after both
sinks, so a commit never passes an undelivered message; a removal or a purge done twice
changes nothing, so while the flow is light the next window is delivered while the one before
is being committed (`commit_behind`: on Apache Kafka a commit took about twice as long as the
Redis work); under load the commit stays in line and the next window keeps filling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from agents.context import Resources
from agents.intake import dead_letter_writer, decoder
from agents.invalidation.coalesce import AdaptiveWindow, Window
from agents.invalidation.config import InvalidationSettings
from agents.invalidation.delivery import CdnSink, RedisSink
from runtime.flow import Flow
from runtime.metrics import COALESCED_TARGETS
from runtime.sink import Sink
from runtime.source import DeadLetterWriter, Received
from runtime.spec import ConsumerSpec
from schemas.events import CacheInvalidation
from sinks.cdn import CdnPurger, CdnSettings
from sinks.redis import RETRYABLE, RedisInvalidator
from sinks.retry import until_written
from topics.catalog import CACHE_INVALIDATIONS


def spec(config: InvalidationSettings) -> ConsumerSpec:
    return ConsumerSpec(
        "invalidation",
        (CACHE_INVALIDATIONS.name,),
        max_batch=config.poll_records,
        fetch_wait_ms=20,
        poll_ms=100,
        # The longest window; `AdaptiveWindow` (in `declare`) decides when a batch is due.
        window_seconds=config.window_seconds,
        stop_seconds=config.shutdown_seconds,
    )


INVALIDATION = spec(InvalidationSettings())


def coalesce(batch: list[Received[CacheInvalidation]]) -> Window:
    window = Window()
    for item in batch:
        window.add(item.event, item.origin)
    COALESCED_TARGETS.labels(stage="received").inc(window.targets_in)
    COALESCED_TARGETS.labels(stage="emitted").inc(window.targets_out)
    return window


async def build(
    resources: Resources,
    config: InvalidationSettings,
    closers: Sequence[Callable[[], Awaitable[None]]] = (),
) -> Flow[CacheInvalidation, Window]:
    """Waits for Redis (the worker is up meanwhile; /health says it is starting)."""
    settings = resources.settings
    redis = await until_written(
        "redis",
        RedisInvalidator.connect,
        settings.redis_url,
        settings.base.security.redis.redis_kwargs(settings.redis_url),
        retryable=RETRYABLE,
    )
    cdn_settings = CdnSettings.from_env(settings.base.cdn_url, settings.base.cdn_providers)
    dead_letter = dead_letter_writer(resources.dead_letters, spec(config))
    to_redis = RedisSink(redis)
    to_cdn = CdnSink(CdnPurger(cdn_settings) if cdn_settings else None, dead_letter)
    return declare(config, [to_redis, to_cdn], dead_letter, closers)


def declare(
    config: InvalidationSettings,
    sinks: Sequence[Sink[Window]],
    dead_letter: DeadLetterWriter,
    closers: Sequence[Callable[[], Awaitable[None]]] = (),
) -> Flow[CacheInvalidation, Window]:
    """`sinks`: Redis, then the CDN."""
    return Flow(
        spec=spec(config),
        decode=decoder(CacheInvalidation, CACHE_INVALIDATIONS),
        dead_letter=dead_letter,
        handle=coalesce,
        sinks=sinks,
        window=AdaptiveWindow(config.window_seconds, config.busy_per_second),
        commit_behind=True,
        closers=closers,
    )
