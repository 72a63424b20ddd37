"""The invalidation flow's two sinks, written in this order for each coalesced window: Redis
and the L1 broadcast (until Redis answers), then the CDN (a bounded number of attempts; what
still fails is dead-lettered with the reason)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from agents.invalidation.coalesce import Target, TargetKind, Window
from cache.layout import Broadcast
from runtime.metrics import INVALIDATIONS, SINK_ERRORS, SINK_RETRIES, observe_end_to_end
from runtime.sink import SinkBackpressure
from runtime.source import DeadLetterWriter
from sinks.cdn import CdnPurger, PurgeKind
from sinks.redis import RETRYABLE, RedisInvalidator
from topics.dlq import Origin

log = logging.getLogger(__name__)

FIRST_RETRY_S = 0.1
MAX_RETRY_S = 5.0
AGENT = "invalidation"  # the `agent` label of this flow's metrics
NO_CDN = "no CDN configured (set SCRIBE_CDN_URL and SCRIBE_CDN_PROVIDERS) for url targets"
MAX_LISTED = 5


class RedisSink:
    """Removes a window's keys, patterns and tags in Redis, then broadcasts to every L1. While
    Redis is down it pushes back: the runtime pauses the partitions and writes the window
    again, so nothing is committed (nor purged at the CDN) past a Redis that missed it."""

    def __init__(self, redis: RedisInvalidator) -> None:
        self.redis = redis
        self.down = False  # Redis writes are failing: /health says so
        self._delay = FIRST_RETRY_S

    async def write(self, window: Window) -> None:
        if not window.ids:
            return
        try:
            applied = await self.redis.apply(window.keys, window.patterns, window.tags)
            broadcast = Broadcast(
                tuple(window.keys), tuple(window.patterns), tuple(window.tags), tuple(window.ids)
            )
            await self.redis.broadcast(broadcast)
        except RETRYABLE as error:
            SINK_ERRORS.labels(sink="redis").inc()
            SINK_RETRIES.labels(sink="redis").inc()
            self.down = True
            delay, self._delay = self._delay, min(self._delay * 2, MAX_RETRY_S)
            raise SinkBackpressure(delay, f"Redis is down ({error!r})") from error
        self.down, self._delay = False, FIRST_RETRY_S
        for kind, count in (
            ("key", applied.keys),
            ("pattern", applied.patterns),
            ("tag", applied.tags),
        ):
            INVALIDATIONS.labels(sink="redis", kind=kind).inc(count)
            INVALIDATIONS.labels(sink="l1", kind=kind).inc(count)
        observe_end_to_end(AGENT, "redis", window.occurred_at)

    async def close(self) -> None:
        await self.redis.close()


class CdnSink:
    """Purges a window's URLs and tags at the CDN (a bounded number of attempts per
    provider); the messages behind what still fails are dead-lettered with the reason."""

    def __init__(self, cdn: CdnPurger | None, dead_letter: DeadLetterWriter) -> None:
        self.cdn = cdn
        self.dead_letter = dead_letter

    async def write(self, window: Window) -> None:
        await self.to_cdn(window)

    async def close(self) -> None:
        if self.cdn is not None:
            await self.cdn.aclose()

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
            await self.dead_letter(origin, "undeliverable", " | ".join(why))
        if reasons:
            log.error("cdn: dead-lettered %d invalidation message(s)", len(reasons))
        if self.cdn is not None and (urls or tags):
            observe_end_to_end(AGENT, "cdn", window.occurred_at, datetime.now(UTC))
        return len(reasons)
