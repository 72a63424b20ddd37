"""CDN sink: purge URLs and tags at every configured provider over HTTP (httpx).

Per provider: calls of at most the API's batch size, a token bucket for its rate limit, a cap
on calls in flight, and up to `max_attempts` tries per call with backoff that honors
`Retry-After` (a 429 pauses the whole provider). What still fails comes back as
`PurgeFailure`s; the caller dead-letters the messages behind those targets.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from runtime.metrics import (
    INVALIDATIONS,
    SINK_BATCH_SIZE,
    SINK_ERRORS,
    SINK_RETRIES,
    SINK_WRITE_SECONDS,
)
from sinks.cdn.adapters import Adapter, Outcome, PurgeCall, PurgeKind, classify
from sinks.cdn.backoff import backoff_seconds, retry_after_seconds
from sinks.cdn.config import CdnSettings, ProviderSettings
from sinks.cdn.rate_limit import TokenBucket

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PurgeFailure:
    provider: str
    kind: PurgeKind
    targets: tuple[str, ...]
    reason: str


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
        self.bucket = TokenBucket(settings.rate, settings.burst, time.monotonic())
        self.slots = asyncio.Semaphore(settings.concurrency)

    async def wait_turn(self) -> None:
        await asyncio.sleep(self.bucket.reserve(time.monotonic()))
        # A 429 that arrived while this call waited holds the provider for longer; a hold
        # only ever moves later, so sleeping until it ends, then checking again, is enough.
        held = self.bucket.held_for(time.monotonic())
        while held > 0:
            await asyncio.sleep(held)
            held = self.bucket.held_for(time.monotonic())


class CdnPurger:
    def __init__(self, settings: CdnSettings) -> None:
        self.settings = settings
        self._lanes = [_Lane(p) for p in settings.providers]
        self._client = httpx.AsyncClient(timeout=settings.timeout)

    @property
    def providers(self) -> list[str]:
        return [lane.adapter.provider.value for lane in self._lanes]

    async def aclose(self) -> None:
        await self._client.aclose()

    async def purge(self, urls: list[str], tags: list[str]) -> list[PurgeFailure]:
        """Purge at every provider; return what could not be purged after all attempts."""
        sends = [
            self._send(lane, call)
            for lane in self._lanes
            for kind, targets in ((PurgeKind.URL, urls), (PurgeKind.TAG, tags))
            for call in lane.adapter.calls(kind, targets)
        ]
        results = await asyncio.gather(*sends)
        return [failure for failure in results if failure is not None]

    async def _send(self, lane: _Lane, call: PurgeCall) -> PurgeFailure | None:
        """One call with its retries. Metrics use the sink `cdn.<provider>`: purged targets in
        scribe_invalidations, failed attempts in scribe_sink_errors, retries in
        scribe_sink_retries."""
        sink = f"cdn.{call.provider.value}"
        attempts = self.settings.max_attempts
        started = time.perf_counter()
        for attempt in range(1, attempts + 1):
            async with lane.slots:
                await lane.wait_turn()
                result = await self._attempt(lane, call)
            if result.outcome is Outcome.OK:
                INVALIDATIONS.labels(sink=sink, kind=call.kind.value).inc(len(call.targets))
                SINK_BATCH_SIZE.labels(sink=sink).observe(len(call.targets))
                SINK_WRITE_SECONDS.labels(sink=sink).observe(time.perf_counter() - started)
                return None
            SINK_ERRORS.labels(sink=sink).inc()
            if not result.outcome.retryable or attempt == attempts:
                tries = f" after {attempt} attempt{'s' if attempt > 1 else ''}"
                return PurgeFailure(
                    call.provider.value, call.kind, call.targets, result.reason + tries
                )
            SINK_RETRIES.labels(sink=sink).inc()
            delay = self._delay(attempt, result)
            if result.outcome is Outcome.RATE_LIMITED:
                lane.bucket.hold_until(time.monotonic() + delay)
            log.warning(
                "cdn %s: %s (attempt %d of %d), retrying in %.2f s",
                call.provider.value,
                result.reason,
                attempt,
                attempts,
                delay,
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns")

    async def _attempt(self, lane: _Lane, call: PurgeCall) -> _Attempt:
        url = lane.settings.base_url + call.path
        try:
            response = await self._client.request(
                call.method, url, headers=call.headers, json=call.json
            )
        except httpx.HTTPError as exc:
            return _Attempt(Outcome.TRANSPORT_ERROR, f"{type(exc).__name__}: {exc}")
        outcome = classify(response.status_code)
        retry_after = retry_after_seconds(response.headers.get("retry-after"), datetime.now(UTC))
        status = f"{response.status_code} {response.reason_phrase}".strip()
        if outcome is Outcome.OK:
            error = lane.adapter.error_in(response.content)
            if error is None:
                return _Attempt(Outcome.OK, status)
            return _Attempt(Outcome.CLIENT_ERROR, error)
        body = response.text[:200].strip()
        reason = f"{call.method} {call.path}: {status}" + (f" ({body})" if body else "")
        return _Attempt(outcome, reason, retry_after)

    def _delay(self, attempt: int, result: _Attempt) -> float:
        if result.retry_after is not None:
            return min(result.retry_after, self.settings.max_retry_after)
        return backoff_seconds(
            attempt, self.settings.backoff_base, self.settings.backoff_cap, random.random()
        )
