"""Execute a routed request: walk its fallback chain, for each model take a key from the pool,
call the provider, retry with backoff within the deadline, respect the circuit breakers; then
build the response, the usage event and the settlement for the decide owner."""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum

from opentelemetry.trace import SpanKind

from agents.router.breaker import Breakers, CircuitBreaker, backoff_delay
from agents.router.images import ImageStore
from agents.router.keys import KeyPool, ProviderKey, Wait
from agents.router.providers import Call, Failure, Provider, ProviderError, Reply
from runtime import tracing
from runtime.metrics import (
    BREAKER_STATE,
    FALLBACKS,
    FREE_TIER_REQUESTS,
    PROVIDER_CALL_SECONDS,
    PROVIDER_CALLS,
)
from schemas.events import (
    MAX_RETRY_AFTER_S,
    AIResponse,
    Refusal,
    RefusalKind,
    ResponseStatus,
    RouteChoice,
    RoutedRequest,
    RouterSettlement,
    UsageEvent,
)
from schemas.model_catalog import ModelCatalog

MONEY_QUANTUM = Decimal("1e-12")
MAX_REASON = 500
MAX_OUTPUT_CHARS = 256_000
MAX_TOKENS = 10_000_000
DEFAULT_COOL_S = 1.0
USAGE_NAMESPACE = uuid.UUID("6f1c9a52-3f0e-4c4e-9a55-0c6d2b7e8a11")


def usage_event_id(request_id: str) -> str:
    """One usage event per request, whatever redelivery happens: the ledger dedups on it."""
    return f"use-{uuid.uuid5(USAGE_NAMESPACE, request_id).hex}"


@dataclass(frozen=True)
class ExecuteConfig:
    attempts_per_model: int = 3
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 5.0
    call_timeout_s: float = 30.0
    default_deadline_s: float = 120.0
    max_output_tokens: int = 1024


@dataclass(frozen=True)
class Outcome:
    response: AIResponse
    usage: UsageEvent | None
    settlement: RouterSettlement


@dataclass(frozen=True)
class _Served:
    choice: RouteChoice
    reply: Reply
    key: ProviderKey
    latency_s: float


def _show(choice: RouteChoice, breaker: CircuitBreaker) -> None:
    BREAKER_STATE.labels(provider=choice.service, model=choice.model).set(int(breaker.state))


def _count_call(choice: RouteChoice, outcome: str, seconds: float) -> None:
    """One provider call made, whatever its outcome."""
    PROVIDER_CALLS.labels(provider=choice.service, model=choice.model, outcome=outcome).inc()
    PROVIDER_CALL_SECONDS.labels(provider=choice.service, model=choice.model).observe(seconds)


def _count_returned_free_slot(routed: RoutedRequest) -> None:
    """The free image slot decide reserved goes back: the free call failed or never ran."""
    free = next((c for c in routed.chain if c.free_tier), None)
    if free is not None:
        FREE_TIER_REQUESTS.labels(provider=free.service, outcome="returned").inc()


def _clip(text: str, limit: int = MAX_REASON) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Upstream:
    """A provider's client and its key pool."""

    provider: Provider
    pool: KeyPool


# When no model served a request, the kind of the whole failure is the first of these that any
# model's miss had: running out of time decides the answer, then a provider that failed, then
# keys that rest, then circuits that are open or models not configured.
FAILURE_PRECEDENCE = (
    RefusalKind.DEADLINE,
    RefusalKind.PROVIDER_ERROR,
    RefusalKind.RATE_LIMITED,
    RefusalKind.UNAVAILABLE,
)


def _wait_of(seconds: float) -> int:
    return min(MAX_RETRY_AFTER_S, max(1, math.ceil(seconds)))


def failure_refusal(misses: list[Refusal]) -> Refusal:
    """Why no model of the chain served the request, from why each one did not; a retry hint
    is the soonest any of the deciding kind named."""
    for kind in FAILURE_PRECEDENCE:
        same = [miss for miss in misses if miss.kind is kind]
        if same:
            waits = [m.retry_after_s for m in same if m.retry_after_s is not None]
            return Refusal(kind=kind, retry_after_s=min(waits) if waits else None)
    return Refusal(kind=RefusalKind.DEADLINE)  # no model was tried: the deadline had passed


class _After(Enum):
    OTHER_KEY = "other key"
    RETRY = "retry"
    NEXT_MODEL = "next model"


async def call_provider(provider: Provider, call: Call, key: ProviderKey) -> Reply:
    """One provider call, in a client span named and described by OpenTelemetry's GenAI
    semantic conventions: `{operation} {model}` with the model asked for and the tokens the
    provider reported. A failed call's span has the error and `error.type` (the failure)."""
    with tracing.tracer().start_as_current_span(
        f"{provider.operation} {call.model}",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": provider.operation,
            "gen_ai.system": provider.service,
            "gen_ai.provider.name": provider.service,
            "gen_ai.request.model": call.model,
            "gen_ai.request.max_tokens": call.max_output_tokens,
            "scribe.provider.key_id": key.id,
        },
    ) as span:
        try:
            reply = await provider.complete(call, key)
        except ProviderError as error:
            span.set_attribute("error.type", error.failure.value)
            if error.status is not None:
                span.set_attribute("http.response.status_code", error.status)
            raise
        span.set_attribute("gen_ai.usage.input_tokens", reply.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", reply.output_tokens)
        return reply


class Executor:
    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        breakers: Breakers,
        catalog: ModelCatalog,
        images: ImageStore,
        config: ExecuteConfig,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.upstreams = upstreams
        self.breakers = breakers
        self.catalog = catalog
        self.images = images
        self.config = config
        self.rng = rng or random.Random()
        self.clock = clock
        self.sleep = sleep
        # Zero for each provider until one first fails over: no fallbacks shows as 0.
        for service in upstreams:
            FALLBACKS.labels(provider=service)

    async def run(self, routed: RoutedRequest) -> Outcome:
        request = routed.request
        now = datetime.now(UTC)
        deadline_at = request.deadline or now + timedelta(seconds=self.config.default_deadline_s)
        deadline = self.clock() + (deadline_at - now).total_seconds()
        notes: list[str] = []
        misses: list[Refusal] = []
        free_failed = False
        served = None
        if deadline <= self.clock():
            notes.append("the deadline passed before the request could run")
        else:
            for choice in routed.chain:
                tried = await self._try_model(routed, choice, deadline, notes)
                if isinstance(tried, _Served):
                    served = tried
                    break
                misses.append(tried)
                free_failed |= choice.free_tier
            if served is None and self.clock() >= deadline:
                # The last call ran into the deadline (its timeout is cut to it): out of time.
                misses.append(Refusal(kind=RefusalKind.DEADLINE))
        if served is not None and served.choice is not routed.chain[0]:
            FALLBACKS.labels(provider=routed.chain[0].service).inc()
        image_url = None
        if served is not None and served.reply.image is not None:
            image_url = await self.images.save(
                request.request_id, served.reply.image, served.reply.image_type or "image/png"
            )
        release_day = routed.free_slot_day if (free_failed or served is None) else None
        if release_day is not None:
            _count_returned_free_slot(routed)
        return self._outcome(
            routed, served, notes, misses, image_url=image_url, release_day=release_day
        )

    async def _try_model(
        self, routed: RoutedRequest, choice: RouteChoice, deadline: float, notes: list[str]
    ) -> _Served | Refusal:
        """The model's answer, or why it gave none (its note added to `notes`)."""
        name = f"{choice.service}/{choice.model}"
        upstream = self.upstreams.get(choice.service)
        if upstream is None:
            notes.append(f"{name}: provider not configured")
            return Refusal(kind=RefusalKind.UNAVAILABLE)
        breaker = self.breakers.get(choice.service, choice.model)
        failures = rate_limited = 0
        while failures < self.config.attempts_per_model and rate_limited <= len(upstream.pool.keys):
            if self.clock() >= deadline:
                notes.append(f"{name}: deadline reached")
                return Refusal(kind=RefusalKind.DEADLINE)
            allowed = breaker.allow(self.clock())
            _show(choice, breaker)
            if not allowed:
                notes.append(f"{name}: circuit open")
                wait = _wait_of(breaker.closed_for(self.clock()))
                return Refusal(kind=RefusalKind.UNAVAILABLE, retry_after_s=wait)
            key = await self._key(upstream.pool, deadline)
            if isinstance(key, Wait):
                breaker.abandon(self.clock())
                notes.append(f"{name}: no key free before the deadline")
                return Refusal(kind=RefusalKind.RATE_LIMITED, retry_after_s=_wait_of(key.seconds))
            call = Call(
                model=choice.model,
                kind=routed.request.kind,
                prompt=routed.request.prompt,
                max_output_tokens=self.config.max_output_tokens,
                timeout_s=max(0.001, min(self.config.call_timeout_s, deadline - self.clock())),
            )
            started = self.clock()
            try:
                reply = await call_provider(upstream.provider, call, key)
            except ProviderError as error:
                _count_call(choice, error.failure.value, self.clock() - started)
                notes.append(f"{name}: {error}")
                after = await self._after(error, upstream.pool, key, breaker)
                _show(choice, breaker)
                if after is _After.NEXT_MODEL:
                    return Refusal(kind=RefusalKind.PROVIDER_ERROR)
                if after is _After.OTHER_KEY:
                    rate_limited += 1
                    continue
                failures += 1
                if failures < self.config.attempts_per_model and not await self._backoff(
                    failures, deadline
                ):
                    notes.append(f"{name}: no time left to retry")
                    return Refusal(kind=RefusalKind.PROVIDER_ERROR)
                continue
            latency = self.clock() - started
            _count_call(choice, "ok", latency)
            breaker.record(self.clock(), ok=True)
            _show(choice, breaker)
            return _Served(choice, reply, key, latency)
        notes.append(f"{name}: gave up after {failures} failures, {rate_limited} rate limits")
        if failures == 0:  # every key it tried was rate limited
            return Refusal(kind=RefusalKind.RATE_LIMITED)
        return Refusal(kind=RefusalKind.PROVIDER_ERROR)

    async def _after(
        self, error: ProviderError, pool: KeyPool, key: ProviderKey, breaker: CircuitBreaker
    ) -> _After:
        """What a failed call means: a rate-limited key rests and another is tried; a server
        error or timeout counts against the model and is retried; a malformed answer counts
        against it and moves on; anything else moves on."""
        if error.failure is Failure.RATE_LIMITED:
            breaker.abandon(self.clock())
            await pool.cool(key, error.retry_after_s or DEFAULT_COOL_S)
            return _After.OTHER_KEY
        if not error.counts_against_model:
            breaker.abandon(self.clock())
            return _After.NEXT_MODEL
        breaker.record(self.clock(), ok=False)
        # The same question would get the same garbage: move on, after counting it.
        return _After.NEXT_MODEL if error.failure is Failure.MALFORMED else _After.RETRY

    async def _backoff(self, failures: int, deadline: float) -> bool:
        """Sleep before the next attempt; False when the deadline leaves no time for it."""
        delay = backoff_delay(
            failures, self.config.backoff_base_s, self.config.backoff_cap_s, self.rng
        )
        if self.clock() + delay >= deadline:
            return False
        await self.sleep(delay)
        return True

    async def _key(self, pool: KeyPool, deadline: float) -> ProviderKey | Wait:
        """A key from the pool, waiting (not failing) while all rest, as long as the deadline
        allows; else the wait that would pass it."""
        while True:
            taken = await pool.acquire()
            if not isinstance(taken, Wait):
                return taken
            if self.clock() + taken.seconds >= deadline:
                return taken
            await self.sleep(taken.seconds + self.rng.uniform(0, 0.05))

    def _outcome(
        self,
        routed: RoutedRequest,
        served: _Served | None,
        notes: list[str],
        misses: list[Refusal],
        *,
        image_url: str | None,
        release_day: date | None,
    ) -> Outcome:
        request = routed.request
        completed = datetime.now(UTC)
        if served is None:
            response = AIResponse(
                request_id=request.request_id,
                user_id=request.user_id,
                status=ResponseStatus.FAILED,
                completed_at=completed,
                error=_clip("no model could serve the request: " + "; ".join(notes)),
                rationale=routed.rationale,
                refusal=failure_refusal(misses),
            )
            return Outcome(response, None, self._settle(routed, response, Decimal(0), release_day))
        reply, choice = served.reply, served.choice
        cost = reply.reported_cost_usd
        if cost is None:
            cost = self.catalog.price(
                choice.service, choice.model, reply.input_tokens, reply.output_tokens, reply.images
            )
        cost = cost.quantize(MONEY_QUANTUM)
        rationale = routed.rationale
        if choice is not routed.chain[0]:
            rationale = f"served by fallback {choice.service}/{choice.model} after: " + "; ".join(
                notes
            )
            rationale = f"{rationale} | {routed.rationale}"
        response = AIResponse(
            request_id=request.request_id,
            user_id=request.user_id,
            status=ResponseStatus.OK,
            completed_at=completed,
            model=choice.model,
            provider=choice.service,
            output=_clip(reply.text, MAX_OUTPUT_CHARS) if reply.text else None,
            image_url=image_url,
            rationale=_clip(rationale),
            cost_usd=cost,
            free_tier=choice.free_tier,
            provider_latency_ms=min(round(served.latency_s * 1000), 3_600_000),
        )
        usage = UsageEvent(
            event_id=usage_event_id(request.request_id),
            request_id=request.request_id,
            user_id=request.user_id,
            service=choice.service,
            model=choice.model,
            input_tokens=min(reply.input_tokens, MAX_TOKENS),
            output_tokens=min(reply.output_tokens, MAX_TOKENS),
            images=reply.images,
            free_tier=choice.free_tier,
            occurred_at=completed,
            cost_usd=cost,
            world_id=request.world_id,
            latency_ms=min(round(served.latency_s * 1000), 3_600_000),
            priority=request.priority,
            key_id=served.key.id,
        )
        return Outcome(response, usage, self._settle(routed, response, cost, release_day))

    @staticmethod
    def _settle(
        routed: RoutedRequest, response: AIResponse, cost: Decimal, release_day: date | None
    ) -> RouterSettlement:
        return RouterSettlement(
            request_id=routed.request.request_id,
            user_id=routed.request.user_id,
            response=response,
            estimated_cost_usd=routed.estimated_cost_usd,
            actual_cost_usd=cost,
            released_free_slot_day=release_day,
        )
