"""CDN sink: purge URLs and tags at every configured provider over HTTP (`JsonPoster`).

Per provider: calls of at most the API's batch size, a token bucket for its rate limit and a
cap on calls in flight; a 429 pauses the whole provider for its `Retry-After`. `purge` makes
one attempt per call and returns what failed as `PurgeFailure`s; the caller decides when to
`retry` them (the invalidation flow does, with backoff until a deadline, its partitions
paused meanwhile) and dead-letters what it gives up on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from runtime.http import JsonPoster
from runtime.metrics import (
    INVALIDATIONS,
    SINK_BATCH_SIZE,
    SINK_ERRORS,
    SINK_WRITE_SECONDS,
)
from runtime.sink import SinkStopping
from sinks.cdn.adapters import Adapter, Outcome, PurgeCall, PurgeKind, classify
from sinks.cdn.backoff import retry_after_seconds
from sinks.cdn.config import CdnSettings, ProviderSettings
from sinks.cdn.rate_limit import TokenBucket
from sinks.retry import STOPPING


@dataclass(frozen=True)
class PurgeFailure:
    provider: str
    kind: PurgeKind
    targets: tuple[str, ...]
    reason: str
    retryable: bool = False  # a 5xx, 408, 429 or no answer; a client error is not
    retry_after: float | None = None  # the server's Retry-After, seconds


@dataclass(frozen=True)
class _Attempt:
    outcome: Outcome
    reason: str
    retry_after: float | None = None


class _Lane:
    """One provider: its adapter, rate limit and in-flight cap."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.adapter: Adapter = settings.adapter()
        self.http = JsonPoster(settings.base_url)
        self.bucket = TokenBucket(settings.rate, settings.burst, time.monotonic())
        self.slots = asyncio.Semaphore(settings.concurrency)

    async def wait_turn(self) -> None:
        await self._pause(self.bucket.reserve(time.monotonic()))
        # A 429 that arrived while this call waited holds the provider for longer; a hold
        # only ever moves later, so sleeping until it ends, then checking again, is enough.
        held = self.bucket.held_for(time.monotonic())
        while held > 0:
            await self._pause(held)
            held = self.bucket.held_for(time.monotonic())

    async def _pause(self, seconds: float) -> None:
        """A stopping worker does not wait its turn: a long purge would hold the stop to its
        deadline, and the batch is purged again after the restart anyway."""
        if seconds > 0 and await STOPPING.wait(seconds):
            raise PurgeStopped(self.adapter.provider.value)


class PurgeStopped(SinkStopping):
    def __init__(self, provider: str) -> None:
        super().__init__(
            f"cdn.{provider}: the worker is stopping while purges wait for their turn; the "
            "batch stays uncommitted and is purged again after a restart"
        )


class CdnPurger:
    def __init__(self, settings: CdnSettings) -> None:
        self.settings = settings
        self._lanes = [_Lane(p) for p in settings.providers]

    @property
    def providers(self) -> list[str]:
        return [lane.adapter.provider.value for lane in self._lanes]

    async def aclose(self) -> None:
        for lane in self._lanes:
            await lane.http.aclose()

    async def purge(self, urls: list[str], tags: list[str]) -> list[PurgeFailure]:
        """One attempt at every provider; what failed, each failure saying whether to retry."""
        return await self._send_all(
            (lane, call)
            for lane in self._lanes
            for kind, targets in ((PurgeKind.URL, urls), (PurgeKind.TAG, tags))
            for call in lane.adapter.calls(kind, targets)
        )

    async def retry(self, failures: list[PurgeFailure]) -> list[PurgeFailure]:
        """One more attempt at exactly what `failures` name (each at its own provider)."""
        lanes = {lane.adapter.provider.value: lane for lane in self._lanes}
        return await self._send_all(
            (lanes[failure.provider], call)
            for failure in failures
            for call in lanes[failure.provider].adapter.calls(failure.kind, list(failure.targets))
        )

    async def _send_all(self, sends: Iterable[tuple[_Lane, PurgeCall]]) -> list[PurgeFailure]:
        calls = [asyncio.ensure_future(self._send(lane, call)) for lane, call in sends]
        try:
            results = await asyncio.gather(*calls)
        except BaseException:
            # A stop (or a bug) ends the purge: the calls still waiting for a slot or a turn
            # must not go on without it, posting after the sink was closed.
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            raise
        return [failure for failure in results if failure is not None]

    async def _send(self, lane: _Lane, call: PurgeCall) -> PurgeFailure | None:
        """One attempt at one call. Metrics use the sink `cdn.<provider>`: purged targets in
        scribe_invalidations, failed attempts in scribe_sink_errors (the caller counts
        retries)."""
        sink = f"cdn.{call.provider.value}"
        started = time.perf_counter()
        async with lane.slots:
            await lane.wait_turn()
            result = await self._attempt(lane, call)
        if result.outcome is Outcome.OK:
            INVALIDATIONS.labels(sink=sink, kind=call.kind.value).inc(len(call.targets))
            SINK_BATCH_SIZE.labels(sink=sink).observe(len(call.targets))
            SINK_WRITE_SECONDS.labels(sink=sink).observe(time.perf_counter() - started)
            return None
        SINK_ERRORS.labels(sink=sink).inc()
        if result.outcome is Outcome.RATE_LIMITED:
            # A 429 holds the whole provider, not only this call.
            wait = min(result.retry_after or 1.0, self.settings.max_retry_after)
            lane.bucket.hold_until(time.monotonic() + wait)
        return PurgeFailure(
            call.provider.value,
            call.kind,
            call.targets,
            result.reason,
            retryable=result.outcome.retryable,
            retry_after=result.retry_after,
        )

    async def _attempt(self, lane: _Lane, call: PurgeCall) -> _Attempt:
        try:
            response = await lane.http.post(
                call.path, call.json, call.headers, self.settings.timeout
            )
        except httpx.HTTPError as exc:
            return _Attempt(Outcome.TRANSPORT_ERROR, f"{type(exc).__name__}: {exc}")
        outcome = classify(response.status)
        retry_after = retry_after_seconds(response.headers.get("retry-after"), datetime.now(UTC))
        status = f"{response.status} {response.reason}".strip()
        if outcome is Outcome.OK:
            error = lane.adapter.error_in(response.content)
            if error is None:
                return _Attempt(Outcome.OK, status)
            return _Attempt(Outcome.CLIENT_ERROR, error)
        body = response.content[:200].decode("utf-8", "replace").strip()
        reason = f"POST {call.path}: {status}" + (f" ({body})" if body else "")
        return _Attempt(outcome, reason, retry_after)
