"""The invalidation flows' sinks. The Redis flow: Redis and the L1 broadcast (until Redis
answers). The CDN flow: the wait for the Redis flow to have committed past a window
(`AfterRedis`), then the CDN (until it answers or the retry deadline passes; what is given up
is dead-lettered with the reason). Each pushes back while it waits, so its flow's partitions
stay paused and nothing is committed past them."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from agents.invalidation.coalesce import Target, TargetKind, Window
from cache.layout import Broadcast
from runtime.metrics import INVALIDATIONS, SINK_ERRORS, SINK_RETRIES, observe_end_to_end
from runtime.sink import SinkBackpressure
from runtime.source import DeadLetterWriter
from sinks.cdn import CdnPurger, PurgeFailure, PurgeKind
from sinks.cdn.backoff import RetryDeadline
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


# A consumer group's committed offsets of the partitions asked for (those with none left out).
Committed = Callable[[list[TopicPartition]], Awaitable[Mapping[TopicPartition, int]]]
AFTER_REDIS_POLL_S = 0.05
AFTER_REDIS_WAIT_S = 2.0  # then push back (and say so) until the Redis flow is past the window


class AfterRedis:
    """The CDN flow's first sink: a window with something to purge waits until the Redis
    flow's consumer group has committed past every message in it (`redis_committed` reads that
    group's offsets). Purged first, a CDN could refetch from an origin that still reads the
    removed value from Redis and cache it again. Polls for up to `AFTER_REDIS_WAIT_S`, then
    pushes back (the Redis flow is down or far behind) until it is past."""

    def __init__(
        self,
        redis_committed: Committed,
        poll_s: float = AFTER_REDIS_POLL_S,
        wait_s: float = AFTER_REDIS_WAIT_S,
    ) -> None:
        self.redis_committed = redis_committed
        self.poll_s = poll_s
        self.wait_s = wait_s
        self.waiting = False  # pushing back: /health says so
        self._delay = FIRST_RETRY_S

    async def write(self, window: Window) -> None:
        if not (window.urls or window.tags):
            return  # nothing for the CDN: nothing to wait for
        needed = {TopicPartition(topic, p): offset for (topic, p), offset in window.offsets.items()}
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                committed = await self.redis_committed(list(needed))
            except KafkaError as error:
                self._push_back(f"the Redis flow's offsets cannot be read ({error!r})")
            behind = [tp for tp, offset in needed.items() if committed.get(tp, 0) < offset]
            if not behind:
                self.waiting, self._delay = False, FIRST_RETRY_S
                return
            if time.monotonic() >= deadline:
                self._push_back(
                    f"waiting for the Redis flow to remove what {len(behind)} partition(s) of "
                    "this window ask for before purging it at the CDN"
                )
            await asyncio.sleep(self.poll_s)

    def _push_back(self, reason: str) -> NoReturn:
        self.waiting = True
        delay, self._delay = self._delay, min(self._delay * 2, MAX_RETRY_S)
        raise SinkBackpressure(delay, reason)

    async def close(self) -> None:
        pass


class CdnSink:
    """Purges a window's URLs and tags at the CDN. What fails with a 5xx, 408, 429 or no answer
    is tried again, with capped exponential backoff, until the retry deadline (default 15
    minutes) after the first failure: meanwhile this sink pushes back, so the runtime pauses
    the partitions and nothing past the window is committed, and `retrying` tells /health.
    The messages behind a client error (a permanent 4xx) are dead-lettered at once, those
    behind what still fails at the deadline then, each with the reason."""

    def __init__(
        self,
        cdn: CdnPurger | None,
        dead_letter: DeadLetterWriter,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.cdn = cdn
        self.dead_letter = dead_letter
        self.clock = clock
        self.jitter = jitter
        self._window: Window | None = None  # the window being purged
        self._pending: list[PurgeFailure] = []  # its calls still to try again
        self._retry: RetryDeadline | None = None
        self._delay = 0.0  # before the next retry
        self._given_up: list[tuple[list[Target], str]] = []  # not dead-lettered yet

    @property
    def retrying(self) -> bool:
        return bool(self._pending)

    def retry_status(self) -> tuple[str, dict[str, Any]]:
        """While `retrying`: why, and how long until the purges are dead-lettered."""
        assert self._retry is not None and self._pending
        left = self._retry.left(self.clock())
        first = self._pending[0]
        reason = (
            f"CDN purges failing (cdn {first.provider}: {first.reason}): partitions paused, "
            f"retrying; {_minutes(left)} left until the retry deadline, then dead-lettered"
        )
        details = {
            "cdn_failing_calls": len(self._pending),
            "cdn_attempts": self._retry.attempts,
            "cdn_seconds_until_deadline": round(left, 1),
        }
        return reason, details

    async def write(self, window: Window) -> None:
        if window is not self._window:
            # A new window, or the same messages regrouped after a rebalance: purge it all.
            self._begin(window)
            failures = await self._first_attempt(window)
        elif self._pending:
            assert self.cdn is not None
            failures = await self.cdn.retry(self._pending)
        else:
            failures = []  # only dead letters left to write (their writer failed before)
        if failures or self._pending:
            self._settle(failures)
        await self._dead_letter_given_up(window)
        if self._pending:
            for provider in {f.provider for f in self._pending}:
                SINK_RETRIES.labels(sink=f"cdn.{provider}").inc()
            reason, _ = self.retry_status()
            raise SinkBackpressure(self._delay, reason)
        self._window = None
        if self.cdn is not None and (window.urls or window.tags):
            observe_end_to_end(AGENT, "cdn", window.occurred_at, datetime.now(UTC))

    async def close(self) -> None:
        if self.cdn is not None:
            await self.cdn.aclose()

    def _begin(self, window: Window) -> None:
        self._window = window
        self._pending = []
        self._given_up = []
        settings = self.cdn.settings if self.cdn is not None else None
        self._retry = (
            RetryDeadline(
                settings.retry_deadline,
                settings.backoff_base,
                settings.backoff_cap,
                settings.max_retry_after,
                settings.max_attempts,
            )
            if settings is not None
            else None
        )

    async def _first_attempt(self, window: Window) -> list[PurgeFailure]:
        urls, tags = window.urls, window.tags
        if self.cdn is None:
            if urls:
                self._given_up.append(([Target(TargetKind.URL, u) for u in urls], NO_CDN))
            return []
        if not (urls or tags):
            return []
        return await self.cdn.purge(urls, tags)

    def _settle(self, failures: list[PurgeFailure]) -> None:
        """Sort one round's failures: client errors are given up now, the rest retried until
        the deadline."""
        assert self._retry is not None
        retryable = [f for f in failures if f.retryable]
        for failure in failures:
            if not failure.retryable:
                self._give_up(failure, "a client error, not retried")
        self._pending = retryable
        if not retryable:
            return
        now = self.clock()
        retry_after = max((f.retry_after for f in retryable if f.retry_after), default=None)
        delay = self._retry.failed(now, retry_after, self.jitter())
        if delay is None:
            why = self._retry.gave_up_because(now)
            for failure in retryable:
                self._give_up(failure, why)
            self._pending = []
        else:
            self._delay = delay
            log.warning(
                "cdn: %d purge call(s) failed (attempt %d), retrying in %.1f s, %s left until "
                "the deadline: %s",
                len(retryable),
                self._retry.attempts,
                delay,
                _minutes(self._retry.left(now)),
                retryable[0].reason,
            )

    def _give_up(self, failure: PurgeFailure, why: str) -> None:
        kind = TargetKind.URL if failure.kind is PurgeKind.URL else TargetKind.TAG
        listed = ", ".join(failure.targets[:MAX_LISTED])
        more = len(failure.targets) - MAX_LISTED
        listed += f" and {more} more" if more > 0 else ""
        self._given_up.append(
            (
                [Target(kind, value) for value in failure.targets],
                f"cdn {failure.provider}: {failure.reason} ({why}); {kind}s: {listed}",
            )
        )

    async def _dead_letter_given_up(self, window: Window) -> None:
        """One dead letter per message behind what was given up, with every reason."""
        reasons: dict[tuple[str, int, int], tuple[Origin, list[str]]] = {}
        for targets, reason in self._given_up:
            for origin in window.origins_of(targets):
                key = (origin.topic, origin.partition, origin.offset)
                reasons.setdefault(key, (origin, []))[1].append(reason)
        for origin, why in reasons.values():
            await self.dead_letter(origin, "undeliverable", " | ".join(why))
        if reasons:
            log.error("cdn: dead-lettered %d invalidation message(s)", len(reasons))
        self._given_up = []


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(int(seconds + 0.5), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"
