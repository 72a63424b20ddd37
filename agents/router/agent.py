"""ai.requests -> decide (low and background first through the held lane) -> lane topics ->
execute -> ai.responses + usage.events, and execute's settlements -> settle. Decide and settle
are flows on the runtime keeping each user's state in Redis (`agents.router.decide_flow`).
Unreadable input goes to ai.requests.dlq with the reason."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from agents.context import Resources
from agents.intake import dead_letter_writer
from agents.router.breaker import BreakerConfig, Breakers
from agents.router.budget_state import BudgetBook, BudgetStateReader
from agents.router.decide import LANE_TOPICS, Emit
from agents.router.decide_flow import (
    DECIDE,
    SETTLE,
    Deciding,
    Settling,
    declare_decide,
    declare_settle,
)
from agents.router.execute import ExecuteConfig, Executor, Upstream
from agents.router.images import ImageStore
from agents.router.keys import KeyPool, Limit, TokenBuckets
from agents.router.lane_consumer import (
    DeferredPlan,
    DoneMarks,
    ExecuteRouted,
    Job,
    LaneConsumer,
)
from agents.router.ledger_store import RouterStore
from agents.router.policy import PolicyConfig
from agents.router.providers import Gemini, OpenRouter, Provider
from agents.router.settings import GEMINI, OPENROUTER, RouterSettings
from runtime import kafka, tracing
from runtime.flow import Flow
from schemas import decode
from schemas.events import AIRequest, Lane, RoutedRequest
from schemas.model_catalog import load_catalog
from sinks.retry import until_written
from topics.catalog import (
    AI_REQUESTS,
    AI_REQUESTS_HELD,
    AI_REQUESTS_READY,
)
from topics.dlq import Origin

log = logging.getLogger(__name__)

PROVIDER_CLASSES: dict[str, type[OpenRouter] | type[Gemini]] = {
    OPENROUTER: OpenRouter,
    GEMINI: Gemini,
}


# Short only where latency matters: each idle consumer polls the embedded broker this often.
FETCH_WAIT_MS = {
    "decide": 20,
    "settle": 50,
    "urgent": 20,
    "normal": 50,
    "deferred": 100,
    "held": 250,
}


def deferred_rate_limit(rate_per_s: float) -> Limit:
    """A bucket holding about one second of requests at the rate (at least one)."""
    capacity = max(1, round(rate_per_s))
    return Limit(capacity, max(1, round(capacity / max(rate_per_s, 1e-6) * 1000)))


def register(app: faust.App, resources: Resources) -> None:
    # httpx logs every request at INFO: far too much at this volume.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = RouterSettings.from_env()
    if not settings.providers:
        log.warning(
            "router: no provider configured (set OPENROUTER_API_KEYS / GEMINI_API_KEYS, or "
            "SCRIBE_PROVIDER_URL for the simulator): every request will be rejected"
        )
    budgets = BudgetBook()
    policy = PolicyConfig(
        services=frozenset(settings.providers),
        free_images_per_day=settings.free_images_per_day,
        over_budget=settings.over_budget,
        default_budget_usd=settings.default_budget_usd,
        max_output_tokens=settings.max_output_tokens,
    )

    images = ImageStore(
        resources.redis,
        settings.image_url_base
        or f"http://{resources.settings.base.web_host}:{resources.settings.base.web_port}",
        settings.image_ttl_s,
    )

    @app.page("/ai/images/{image_id}")
    async def serve_image(web: Any, request: Any, image_id: str) -> Any:
        found = await images.load(image_id)
        if found is None:
            return web.json({"error": "no such image (or it expired)"}, status=404)
        data, content_type = found
        return web.bytes(data, content_type=content_type)

    upstreams: dict[str, Upstream] = {}

    async def start_execution() -> None:
        upstreams.update(_upstreams(resources, settings))
        await _start_execution(
            app,
            resources,
            settings,
            upstreams=upstreams,
            images=images,
            budgets=budgets,
            policy=policy,
        )

    app.task(start_execution)

    async def close_providers() -> None:
        for upstream in upstreams.values():
            await upstream.provider.aclose()

    # After the lanes stopped: a call still in flight at shutdown finishes on an open client.
    resources.on_close("provider HTTP clients", close_providers)


def _trace_headers(emit: Emit) -> list[tuple[str, bytes]] | None:
    """The headers an emit is sent with: its own trace context, or the current span's."""
    return list(emit.headers) or tracing.inject() or None


def _upstreams(resources: Resources, settings: RouterSettings) -> dict[str, Upstream]:
    """One pooled HTTP client and one key pool per configured provider."""
    upstreams = {}
    for service, provider_settings in settings.providers.items():
        provider: Provider = PROVIDER_CLASSES[service](
            provider_settings.base_url, settings.call_timeout_s
        )
        pool = KeyPool(
            resources.redis,
            service,
            provider_settings.keys,
            provider_settings.requests_per_minute,
            provider_settings.requests_per_day,
        )
        upstreams[service] = Upstream(provider, pool)
    return upstreams


async def _start_execution(
    app: faust.App,
    resources: Resources,
    settings: RouterSettings,
    *,
    upstreams: dict[str, Upstream],
    images: ImageStore,
    budgets: BudgetBook,
    policy: PolicyConfig,
) -> None:
    executor = Executor(
        upstreams,
        Breakers(
            BreakerConfig(
                failure_rate=settings.breaker_failure_rate,
                min_calls=settings.breaker_min_calls,
                window_s=settings.breaker_window_s,
                cooldown_s=settings.breaker_cooldown_s,
            )
        ),
        load_catalog(),
        images,
        ExecuteConfig(
            attempts_per_model=settings.attempts_per_model,
            backoff_base_s=settings.backoff_base_s,
            backoff_cap_s=settings.backoff_cap_s,
            call_timeout_s=settings.call_timeout_s,
            default_deadline_s=settings.default_deadline_s,
            max_output_tokens=settings.max_output_tokens,
        ),
    )

    async def publish(emits: list[Emit]) -> None:
        async def send_all() -> None:
            pending = [
                await app.producer.send(e.spec.name, e.key, e.value, None, None, _trace_headers(e))
                for e in emits
            ]
            for future in pending:
                await future

        await until_written("router.publish", send_all, retryable=(KafkaError, OSError))

    async def dead_letter(origin: Origin, kind: str, reason: str) -> None:
        await resources.dead_letters.send(AI_REQUESTS, origin, kind, reason)

    base = resources.settings.base

    def router_group(lane: str) -> str:
        return kafka.group_id(base.app_id, f"router-{lane}")

    def router_consumer(group: str, fetch_wait_ms: int) -> Callable[[], AIOKafkaConsumer]:
        """Builds the consumer of one router group (`<app_id>.router-<lane>`) when its
        service starts; through the one client factory, so it reaches a secured cluster."""
        return partial(
            kafka.consumer,
            resources.settings,
            router_group(group),
            # The embedded broker answers a waiting fetch only when its wait runs out (see
            # scribe/faust_fetch_wait.py); Kafka answers when data arrives.
            fetch_max_wait_ms=fetch_wait_ms if base.fast_rebalance else 500,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            rebalance_timeout_ms=5_000 if base.fast_rebalance else 60_000,
        )

    store = RouterStore(resources.redis, settings.idempotency_window_s)
    fast = base.fast_rebalance

    async def decide() -> Flow[Any, Any]:
        deciding = Deciding(store, budgets, load_catalog(), policy, publish)
        writer = dead_letter_writer(resources.dead_letters, DECIDE, into=AI_REQUESTS)
        return declare_decide(deciding, writer, FETCH_WAIT_MS["decide"] if fast else 500)

    async def settle() -> Flow[Any, Any]:
        writer = dead_letter_writer(resources.dead_letters, SETTLE, into=AI_REQUESTS)
        settling = Settling(store, publish)
        return declare_settle(settling, writer, FETCH_WAIT_MS["settle"] if fast else 500)

    await app.add_runtime_dependency(resources.flow_service(DECIDE.flow, decide)())
    await app.add_runtime_dependency(resources.flow_service(SETTLE.flow, settle)())

    async def release(job: Job[AIRequest]) -> None:
        with tracing.consuming(
            "router.release", job.headers, {"scribe.request_id": job.payload.request_id}
        ):
            await publish([Emit(AI_REQUESTS_READY, job.payload.user_id.encode(), job.value)])

    await app.add_runtime_dependency(
        LaneConsumer(
            "held",
            AI_REQUESTS_HELD,
            router_consumer("held", FETCH_WAIT_MS["held"]),
            group=router_group("held"),
            groups=resources.consumer_groups,
            read=lambda value: decode(value, AIRequest),
            deadline_of=lambda request: request.deadline,
            handle=release,
            dead_letter=dead_letter,
            concurrency=settings.deferred_concurrency,
            deferred=DeferredPlan(
                rate_gate=TokenBuckets(
                    resources.redis,
                    "lane:held",
                    ["held"],
                    [deferred_rate_limit(settings.deferred_rate_per_s)],
                ),
                offpeak=settings.offpeak,
                promote_before=timedelta(seconds=settings.promote_before_s),
                max_held=settings.deferred_max_held,
            ),
            stop_together=resources.flows,
        )
    )
    execute = ExecuteRouted(
        executor,
        publish,
        dead_letter,
        DoneMarks(resources.redis, settings.idempotency_window_s),
    )
    concurrency = {
        Lane.URGENT: settings.urgent_concurrency,
        Lane.NORMAL: settings.normal_concurrency,
        Lane.DEFERRED: settings.deferred_concurrency,
    }
    for lane, spec in LANE_TOPICS.items():
        await app.add_runtime_dependency(
            LaneConsumer(
                lane.value,
                spec,
                router_consumer(lane.value, FETCH_WAIT_MS[lane.value]),
                group=router_group(lane.value),
                groups=resources.consumer_groups,
                read=lambda value: decode(value, RoutedRequest),
                deadline_of=lambda routed: routed.request.deadline,
                handle=execute,
                dead_letter=dead_letter,
                concurrency=concurrency[lane],
                stop_together=resources.flows,
            )
        )
    await app.add_runtime_dependency(
        BudgetStateReader(resources.settings, settings.budget_state_topic, budgets)
    )
    log.info(
        "router: executing with %s",
        ", ".join(
            f"{s} at {p.base_url} ({len(p.keys)} keys{', simulator' if p.simulated else ''})"
            for s, p in settings.providers.items()
        )
        or "no providers",
    )
