"""Carry one coalesced window to the sinks, in the order the flow promises: Redis first
(retried until it succeeds), then the L1 broadcast, then the CDN (a bounded number of
attempts; what still fails is dead-lettered with the reason)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiokafka.errors import KafkaError

from agents.invalidation.coalesce import Target, TargetKind, Window
from cache.layout import Broadcast
from runtime.metrics import INVALIDATIONS, observe_end_to_end
from sinks.cdn import CdnPurger, PurgeKind
from sinks.redis import RETRYABLE, RedisInvalidator
from sinks.retry import until_written
from topics.catalog import CACHE_INVALIDATIONS
from topics.dlq import DeadLetters, Origin

log = logging.getLogger(__name__)

KAFKA_RETRYABLE = (KafkaError, OSError, asyncio.TimeoutError)
AGENT = "invalidation"  # the `agent` label of this flow's metrics
NO_CDN = "no CDN configured (set SCRIBE_CDN_URL and SCRIBE_CDN_PROVIDERS) for url targets"
MAX_LISTED = 5


class Delivery:
    def __init__(
        self, redis: RedisInvalidator, cdn: CdnPurger | None, dead_letters: DeadLetters
    ) -> None:
        self.redis = redis
        self.cdn = cdn
        self.dead_letters = dead_letters
        # True while Redis writes are failing: the consumer pauses its partitions.
        self.redis_down = False

    def _redis_failed(self, exc: BaseException) -> None:
        self.redis_down = True

    async def to_redis(self, window: Window) -> None:
        """Remove the window's keys, patterns and tags, then broadcast to every L1. Waits
        (retrying) for as long as Redis is down."""
        if not window.ids:
            return
        applied = await until_written(
            "redis",
            self.redis.apply,
            window.keys,
            window.patterns,
            window.tags,
            retryable=RETRYABLE,
            on_retry=self._redis_failed,
        )
        broadcast = Broadcast(
            tuple(window.keys), tuple(window.patterns), tuple(window.tags), tuple(window.ids)
        )
        await until_written(
            "redis.l1",
            self.redis.broadcast,
            broadcast,
            retryable=RETRYABLE,
            on_retry=self._redis_failed,
        )
        self.redis_down = False
        for kind, count in (
            ("key", applied.keys),
            ("pattern", applied.patterns),
            ("tag", applied.tags),
        ):
            INVALIDATIONS.labels(sink="redis", kind=kind).inc(count)
            INVALIDATIONS.labels(sink="l1", kind=kind).inc(count)
        observe_end_to_end(AGENT, "redis", window.occurred_at)

    async def to_cdn(self, window: Window) -> int:
        """Purge the window's URLs and tags at the CDN; dead-letter the messages behind what
        could not be purged. Returns how many messages were dead-lettered."""
        urls, tags = window.urls, window.tags
        failures: list[tuple[list[Target], str]] = []
        if self.cdn is None:
            if urls:
                failures.append(([Target(TargetKind.URL, u) for u in urls], NO_CDN))
        elif urls or tags:
            for failure in await self.cdn.purge(urls, tags):
                kind = TargetKind.URL if failure.kind is PurgeKind.URL else TargetKind.TAG
                targets = [Target(kind, value) for value in failure.targets]
                listed = ", ".join(failure.targets[:MAX_LISTED])
                more = len(failure.targets) - MAX_LISTED
                listed += f" and {more} more" if more > 0 else ""
                failures.append(
                    (targets, f"cdn {failure.provider}: {failure.reason}; {kind}s: {listed}")
                )
        reasons: dict[tuple[str, int, int], tuple[Origin, list[str]]] = {}
        for targets, reason in failures:
            for origin in window.origins_of(targets):
                key = (origin.topic, origin.partition, origin.offset)
                reasons.setdefault(key, (origin, []))[1].append(reason)
        for origin, why in reasons.values():
            await until_written(
                "kafka.dlq",
                self.dead_letters.send,
                CACHE_INVALIDATIONS,
                origin,
                "undeliverable",
                " | ".join(why),
                retryable=KAFKA_RETRYABLE,
            )
        if reasons:
            log.error("cdn: dead-lettered %d invalidation message(s)", len(reasons))
        if self.cdn is not None and (urls or tags):
            observe_end_to_end(AGENT, "cdn", window.occurred_at, datetime.now(UTC))
        return len(reasons)
