"""ai.requests -> decide (low and background first through the held lane) -> lane topics ->
execute -> ai.responses + usage.events, and execute's settlements -> settle. Decide and settle
are flows on the runtime keeping each user's state in Redis (`agents.router.decide_flow`); the
lanes are per-record flows (`agents.router.lane_consumer`). Unreadable input goes to
ai.requests.dlq with the reason."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any

import faust
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
from agents.router.express import Express
from agents.router.images import ImageStore
from agents.router.keys import KeyPool, Limit, TokenBuckets
from agents.router.lane_consumer import (
    STOP_GRACE_S,
    DeferredPlan,
    DoneMarks,
    ExecuteRouted,
    HeldRelease,
    declare_lane,
    lane_spec,
)
from agents.router.ledger_store import RouterStore
from agents.router.policy import PolicyConfig
from agents.router.providers import Gemini, OpenRouter, Provider
from agents.router.sends import SendsInFlight
from agents.router.settings import GEMINI, OPENROUTER, RouterSettings
from runtime import tracing
from runtime.concurrent import RecordFlow
from runtime.flow import Flow
from runtime.source import Received
from runtime.spec import ConsumerSpec
from schemas import decode
from schemas.events import AIRequest, Lane, RoutedRequest
from schemas.model_catalog import load_catalog
from sinks.retry import until_written
from topics.catalog import AI_REQUESTS, AI_REQUESTS_HELD, AI_REQUESTS_READY
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


def register(
    app: faust.App, resources: Resources, *, deciding: bool = True, executing: bool = True
) -> None:
    """Hosts decide and settle (`deciding`) and the lanes that call the providers
    (`executing`); a worker may host either half (`SCRIBE_WORKER_FLOWS`)."""
    # httpx logs every request at INFO: far too much at this volume.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = RouterSettings.from_env()
    hosted = _Hosted(app, resources, settings, expressing=deciding and executing)
    if deciding:
        hosted.deciding()
    if executing:
        hosted.executing()


class _Hosted:
    """The router's flows hosted like the worker's others (each group's lag sampled, stopped
    with them, /ready waiting for its join), registered now and built when the worker starts."""

    def __init__(
        self, app: faust.App, resources: Resources, settings: RouterSettings, expressing: bool
    ) -> None:
        self.app = app
        self.resources = resources
        self.settings = settings
        self.base = resources.settings.base
        # The execution lanes' handler, once `executing` declared them.
        self.handler: Callable[[], ExecuteRouted] | None = None
        # Decide hands urgent and normal requests to the lanes in this worker at once.
        self.express = (
            Express(
                self.execute,
                {
                    Lane.URGENT: settings.urgent_concurrency,
                    Lane.NORMAL: settings.normal_concurrency,
                },
                STOP_GRACE_S,
            )
            if expressing and settings.express
            else None
        )

    async def execute(self, job: Received[RoutedRequest]) -> None:
        """Run a decided request as its lane would (the express hand-off)."""
        if self.handler is None:
            raise RuntimeError("express runs only in a worker that hosts the execution lanes")
        await self.handler().decided_now(job)

    def fetch_wait_ms(self, flow: str, on_kafka_ms: int = 500) -> int:
        # The rule is `Settings.fetch_wait_ms` (the embedded broker: bench/faust_fetch_wait.py).
        # On Kafka a flow with a `fetch_min_bytes` is answered once that much has gathered or
        # `on_kafka_ms` ran out.
        return self.base.fetch_wait_ms(FETCH_WAIT_MS[flow], on_kafka_ms)

    async def enqueue(self, emit: Emit) -> Awaitable[Any]:
        """Hand `emit` to the producer; what it returns is its acknowledgement."""
        return await self.app.producer.send(
            emit.spec.name, emit.key, emit.value, None, None, _trace_headers(emit)
        )

    async def publish(self, emits: list[Emit]) -> None:
        async def send_all() -> None:
            pending = [await self.enqueue(e) for e in emits]
            for future in pending:
                await future

        await until_written("router.publish", send_all, retryable=(KafkaError, OSError))

    async def dead_letter(self, record: Origin, kind: str, reason: str) -> None:
        await self.resources.dead_letters.send(AI_REQUESTS, record, kind, reason, agent="router")

    def deciding(self) -> None:
        """Decide and settle, with the budget states decide reads."""
        app, resources, settings = self.app, self.resources, self.settings
        budgets = BudgetBook()
        policy = PolicyConfig(
            services=frozenset(settings.providers),
            free_images_per_day=settings.free_images_per_day,
            over_budget=settings.over_budget,
            default_budget_usd=settings.default_budget_usd,
            max_output_tokens=settings.max_output_tokens,
        )
        store = RouterStore(resources.redis, settings.idempotency_window_s)

        async def decide() -> Flow[Any, Any]:
            sends = SendsInFlight(self.enqueue, self.publish)
            express = self.express

            async def send(emits: list[Emit]) -> None:
                # Offered before they are sent, so no lane here reads one before it is known.
                if express is not None:
                    express.offer(emits)
                await sends.send(emits)

            deciding = Deciding(store, budgets, load_catalog(), policy, send)
            writer = dead_letter_writer(resources.dead_letters, DECIDE, into=AI_REQUESTS)
            return declare_decide(deciding, writer, self.fetch_wait_ms("decide"), sends.flush)

        async def settle() -> Flow[Any, Any]:
            sends = SendsInFlight(self.enqueue, self.publish)
            writer = dead_letter_writer(resources.dead_letters, SETTLE, into=AI_REQUESTS)
            return declare_settle(
                Settling(store, sends.send),
                writer,
                self.fetch_wait_ms("settle", SETTLE.fetch_wait_ms),
                sends.flush,
            )

        app.service(resources.flow_service(DECIDE.flow, decide))
        app.service(resources.flow_service(SETTLE.flow, settle))

        async def start_budget_reader() -> None:
            await app.add_runtime_dependency(
                BudgetStateReader(resources.settings, settings.budget_state_topic, budgets)
            )

        app.task(start_budget_reader)

    def executing(self) -> None:
        """The held lane, the execution lanes, and the page that serves generated images."""
        app, resources, settings = self.app, self.resources, self.settings
        if not settings.providers:
            log.warning(
                "router: no provider configured (set OPENROUTER_API_KEYS / GEMINI_API_KEYS, or "
                "SCRIBE_PROVIDER_URL for the simulator): every request will be rejected"
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
        built: dict[str, ExecuteRouted] = {}

        def execute() -> ExecuteRouted:
            """The execution lanes' handler, built once, by the first lane that starts."""
            if "execute" not in built:
                upstreams.update(_upstreams(resources, settings))
                built["execute"] = ExecuteRouted(
                    _executor(settings, upstreams, images),
                    self.publish,
                    self.dead_letter,
                    DoneMarks(resources.redis, settings.idempotency_window_s),
                )
                providers = [
                    f"{name} at {p.base_url} ({len(p.keys)} keys"
                    f"{', simulator' if p.simulated else ''})"
                    for name, p in settings.providers.items()
                ]
                log.info("router: executing with %s", ", ".join(providers) or "no providers")
            return built["execute"]

        self.handler = execute

        async def release(job: Received[AIRequest]) -> None:
            with tracing.consuming(
                "router.release", job.origin.headers, {"scribe.request_id": job.event.request_id}
            ):
                value = job.origin.value or b""
                await self.publish([Emit(AI_REQUESTS_READY, job.event.user_id.encode(), value)])

        held_spec = lane_spec("held", AI_REQUESTS_HELD, self.fetch_wait_ms("held"))

        async def held() -> RecordFlow[AIRequest]:
            plan = DeferredPlan(
                rate_gate=TokenBuckets(
                    resources.redis,
                    "lane:held",
                    ["held"],
                    [deferred_rate_limit(settings.deferred_rate_per_s)],
                ),
                offpeak=settings.offpeak,
                promote_before=timedelta(seconds=settings.promote_before_s),
                max_held=settings.deferred_max_held,
            )
            return declare_lane(
                held_spec,
                read=lambda value: decode(value, AIRequest),
                handle=release,
                dead_letter=self.dead_letter,
                concurrency=settings.deferred_concurrency,
                holding=HeldRelease("held", plan, lambda request: request.deadline),
            )

        app.service(resources.flow_service(held_spec.flow, held))

        concurrency = {
            Lane.URGENT: settings.urgent_concurrency,
            Lane.NORMAL: settings.normal_concurrency,
            Lane.DEFERRED: settings.deferred_concurrency,
        }

        async def execution_lane(spec: ConsumerSpec, lane: Lane) -> RecordFlow[RoutedRequest]:
            return declare_lane(
                spec,
                read=lambda value: decode(value, RoutedRequest),
                handle=execute() if self.express is None else self.express.or_run(execute()),
                dead_letter=self.dead_letter,
                concurrency=concurrency[lane],
                express=self.express,
            )

        for lane, topic in LANE_TOPICS.items():
            spec = lane_spec(lane.value, topic, self.fetch_wait_ms(lane.value))
            app.service(resources.flow_service(spec.flow, partial(execution_lane, spec, lane)))

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
        provider: Provider = PROVIDER_CLASSES[service](provider_settings.base_url)
        pool = KeyPool(
            resources.redis,
            service,
            provider_settings.keys,
            provider_settings.requests_per_minute,
            provider_settings.requests_per_day,
        )
        upstreams[service] = Upstream(provider, pool)
    return upstreams


def _executor(
    settings: RouterSettings, upstreams: dict[str, Upstream], images: ImageStore
) -> Executor:
    return Executor(
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
