"""cache.invalidations -> coalesced windows -> Redis + the L1 broadcast; and, in a consumer group
of its own, -> the CDN. Identical targets read within one window (which stays open while the
window before it is delivered, so a burst merges more) become one removal and one purge. A
light flow delivers at once; the window is held open only under load (`AdaptiveWindow`).

The CDN has a flow of its own because it is slow and rate-limited (Fastly takes 50 URL purges a
second by default) and its outages are ridden out for up to 15 minutes: in one flow with Redis,
every Redis removal waited behind the purges before it. Order is kept per message: the CDN flow
purges a window only once the Redis flow's group has committed past it (`AfterRedis`), so a
purged CDN never refetches from an origin whose Redis still holds what the message removed.

Each flow commits its offsets after its own sinks, so a commit never passes an undelivered
message; a removal or a purge done twice changes nothing, so while a flow is light the next
window is delivered while the one before is being committed (`commit_behind`: on Apache Kafka a
commit took about twice as long as the Redis work); under load the commit stays in line and
the next window keeps filling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

import orjson
from aiokafka import TopicPartition

from agents.context import Resources
from agents.intake import dead_letter_writer, decoder
from agents.invalidation.coalesce import (
    FOR_REDIS,
    FOR_THE_CDN,
    AdaptiveWindow,
    TargetKind,
    Window,
)
from agents.invalidation.config import InvalidationSettings
from agents.invalidation.delivery import AfterRedis, CdnSink, Committed, RedisSink
from runtime.flow import Flow, StartAt
from runtime.lag import OffsetReader
from runtime.metrics import COALESCED_TARGETS
from runtime.sink import Sink
from runtime.source import DeadLetterWriter, Received, Record, Rejected
from runtime.spec import ConsumerSpec
from schemas.events import CacheInvalidation
from sinks.cdn import CdnPurger, CdnSettings
from sinks.redis import RETRYABLE, RedisInvalidator
from sinks.retry import until_written
from topics.catalog import CACHE_INVALIDATIONS


def spec(config: InvalidationSettings, flow: str = "invalidation") -> ConsumerSpec:
    return ConsumerSpec(
        flow,
        (CACHE_INVALIDATIONS.name,),
        max_batch=config.poll_records,
        fetch_wait_ms=config.fetch_wait_ms,
        poll_ms=100,
        # The longest window; `AdaptiveWindow` (in `declare`) decides when a batch is due.
        window_seconds=config.window_seconds,
        stop_seconds=config.shutdown_seconds,
    )


INVALIDATION = spec(InvalidationSettings())
CDN_INVALIDATION = spec(InvalidationSettings(), "invalidation-cdn")


def coalesce(batch: list[Received[CacheInvalidation]]) -> Window:
    """The Redis flow's window: keys, patterns and tags (what the coalescing metric counts)."""
    window = _window(batch, FOR_REDIS)
    COALESCED_TARGETS.labels(stage="received").inc(window.targets_in)
    COALESCED_TARGETS.labels(stage="emitted").inc(window.targets_out)
    return window


def coalesce_for_the_cdn(batch: list[Received[CacheInvalidation]]) -> Window:
    """The CDN flow's window: URLs and tags."""
    return _window(batch, FOR_THE_CDN)


def _window(batch: list[Received[CacheInvalidation]], kinds: frozenset[TargetKind]) -> Window:
    window = Window()
    for item in batch:
        window.add(item.event, item.origin, kinds)
    return window


NOTHING_TO_PURGE = Rejected("nothing_to_purge", "no URL or tag for the CDN flow")


def decode_for_the_cdn(record: Record) -> CacheInvalidation | Rejected:
    """Validates only a message with a URL or a tag; one without (most: a world's tick names
    keys only) is passed over after a plain JSON parse, about a fifth of a validation. The
    Redis flow reads and validates every message, and dead-letters what is bad."""
    try:
        data = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        return NOTHING_TO_PURGE
    if isinstance(data, dict) and not data.get("urls") and not data.get("tags"):
        return NOTHING_TO_PURGE
    return _decode(record)


_decode = decoder(CacheInvalidation, CACHE_INVALIDATIONS)


async def build(
    resources: Resources,
    config: InvalidationSettings,
    closers: Sequence[Callable[[], Awaitable[None]]] = (),
) -> Flow[CacheInvalidation, Window]:
    """The Redis flow. Waits for Redis (the worker is up meanwhile; /health says it is
    starting)."""
    settings = resources.settings
    redis = await until_written(
        "redis",
        RedisInvalidator.connect,
        settings.redis_url,
        settings.base.security.redis.redis_kwargs(settings.redis_url),
        retryable=RETRYABLE,
    )
    dead_letter = dead_letter_writer(resources.dead_letters, spec(config))
    return declare(config, [RedisSink(redis)], dead_letter, closers)


async def build_cdn(
    resources: Resources, config: InvalidationSettings
) -> Flow[CacheInvalidation, Window]:
    settings = resources.settings
    cdn_settings = CdnSettings.from_env(settings.base.cdn_url, settings.base.cdn_providers)
    cdn_spec = spec(config, CDN_INVALIDATION.flow)
    offsets = OffsetReader(settings)
    redis_group, cdn_group = spec(config).group(settings), cdn_spec.group(settings)

    async def redis_committed(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return await offsets.committed(redis_group, partitions)

    async def own_committed(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return await offsets.committed(cdn_group, partitions)

    to_cdn = CdnSink(
        CdnPurger(cdn_settings) if cdn_settings else None,
        dead_letter_writer(resources.dead_letters, cdn_spec),
    )
    sinks: list[Sink[Window]] = [AfterRedis(redis_committed), to_cdn]
    starts = where_the_redis_flow_is(own_committed, redis_committed)
    return declare_cdn(config, sinks, starts, [offsets.close])


def where_the_redis_flow_is(own: Committed, redis: Committed) -> StartAt:
    """The CDN flow's start: a partition its group never committed (`own`) starts where the
    Redis flow's group is (`redis`): up to there the one flow of earlier versions purged it
    too, and a new deployment's groups both start at the log's start."""

    async def starts(partitions: frozenset[TopicPartition]) -> Mapping[TopicPartition, int]:
        committed = await own(sorted(partitions))
        return await redis([tp for tp in sorted(partitions) if tp not in committed])

    return starts


def declare(
    config: InvalidationSettings,
    sinks: Sequence[Sink[Window]],
    dead_letter: DeadLetterWriter,
    closers: Sequence[Callable[[], Awaitable[None]]] = (),
) -> Flow[CacheInvalidation, Window]:
    """The Redis flow: `sinks` are Redis and the L1 broadcast."""
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


def declare_cdn(
    config: InvalidationSettings,
    sinks: Sequence[Sink[Window]],
    starts: StartAt | None = None,
    closers: Sequence[Callable[[], Awaitable[None]]] = (),
) -> Flow[CacheInvalidation, Window]:
    """The CDN flow: `sinks` are the wait for the Redis flow (`AfterRedis`), then the CDN. A
    message that does not decode is the Redis flow's to dead-letter (once, not once per flow);
    a purge given up is dead-lettered by the CDN sink."""
    return Flow(
        spec=spec(config, CDN_INVALIDATION.flow),
        decode=decode_for_the_cdn,
        dead_letter=_passed_over,
        handle=coalesce_for_the_cdn,
        sinks=sinks,
        window=AdaptiveWindow(config.window_seconds, config.busy_per_second),
        commit_behind=True,
        closers=closers,
        starts=starts,
    )


async def _passed_over(record: Record, kind: str, reason: str) -> None:
    """A record with nothing to purge, or one the Redis flow dead-letters (it reads the same
    records and validates them all): the CDN flow commits past it."""
