"""Wires a worker's observability: the core health checks (Kafka, PostgreSQL, Redis), the
consumer-lag sampler (of every consumer group registered in `resources.consumer_groups`), the
cost-total sampler, the event loop's lateness, the dashboard feed, and the web pages that serve
them.

A flow adds its own components to the same registry: `resources.health.add("cdn", check,
critical=False)` (see `runtime.health.http_check`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import faust
from prometheus_client import REGISTRY, Histogram

from agents.context import Resources
from runtime.health import Finding, Status
from runtime.lag import LagSampler, OffsetReader
from runtime.metrics import EVENT_LOOP_LAG_SECONDS
from scribe.cost_totals import refresh_cost_totals
from scribe.dashboard.feed import FRAME_INTERVAL_S, DashboardFeed
from scribe.web import register_pages
from topics.catalog import DEAD_LETTER_TOPICS, TOPICS

LAG_INTERVAL_S = 5.0
COST_INTERVAL_S = 10.0
LOOP_PROBE_INTERVAL_S = 0.1

log = logging.getLogger(__name__)


def register(app: faust.App, resources: Resources) -> None:
    settings = resources.settings
    offsets = OffsetReader(settings)
    _add_core_checks(resources, offsets)
    lag = LagSampler(resources.consumer_groups, offsets)
    feed = DashboardFeed(REGISTRY, resources.health, baseline_at=time.time())

    async def sample_consumer_lag() -> None:
        await _logged("consumer lag", lag.sample)

    async def refresh_costs() -> None:
        async def refresh() -> None:
            now = datetime.now(UTC)
            await resources.read(lambda pool: refresh_cost_totals(pool, now))

        await _logged("cost totals", refresh)

    async def dashboard_frame() -> None:
        await _logged("dashboard frame", feed.tick)

    async def probe_event_loop() -> None:
        await probe_loop_lag(EVENT_LOOP_LAG_SECONDS, LOOP_PROBE_INTERVAL_S)

    app.task(probe_event_loop)
    timer: Any = app.timer
    timer(LAG_INTERVAL_S)(sample_consumer_lag)
    timer(COST_INTERVAL_S)(refresh_costs)
    timer(FRAME_INTERVAL_S)(dashboard_frame)
    register_pages(app, resources.health, feed, resources.flow_states)

    async def end_streams(_: Any) -> None:
        feed.close()

    # aiohttp runs on_shutdown before it waits for open requests: end the streams first.
    web_driver: Any = app.web
    web_driver.web_app.on_shutdown.append(end_streams)

    @app.on_before_shutdown.connect
    async def _close(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        feed.close()
        await offsets.close()


async def probe_loop_lag(histogram: Histogram, interval_s: float) -> None:
    """Observe, every `interval_s`, how much later than due the loop woke this task: the time a
    batch's CPU work, a garbage collection or a blocking call held every flow on the loop."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        histogram.observe(max(loop.time() - due, 0.0))


async def _logged(what: str, work: Callable[[], Awaitable[Any]]) -> None:
    """A sampler that fails (a service is down) logs why and tries again on its next tick; it
    must not stop the worker, and /health reports the outage itself."""
    try:
        await work()
    except Exception as exc:
        log.warning(
            "%s: sampling failed, retrying next tick: %s: %s", what, type(exc).__name__, exc
        )


def _add_core_checks(resources: Resources, offsets: OffsetReader) -> None:
    pipeline_topics = {t.name for t in TOPICS} | {t.name for t in DEAD_LETTER_TOPICS}

    async def kafka() -> Finding:
        known = await offsets.topics()
        missing = sorted(pipeline_topics - known)
        groups = list(resources.consumer_groups)
        details: dict[str, Any] = {
            "consumer_groups": len(groups),
            "assigned_partitions": sum(len(list(g.consumer.assignment())) for g in groups),
        }
        if missing:
            return Finding(Status.UNHEALTHY, f"topics missing: {', '.join(missing)}", details)
        return Finding(Status.HEALTHY, "metadata ok", details)

    async def postgres() -> None:
        pool = await resources.database()
        await pool.fetchval("SELECT 1")

    async def redis() -> None:
        await resources.redis.ping()

    # PostgreSQL holds the ledger: without it the usage flow cannot commit. Redis down only
    # delays invalidations (the sink retries), so the worker is degraded, not unfit.
    resources.health.add("kafka", kafka, critical=True)
    resources.health.add("postgres", postgres, critical=True)
    resources.health.add("redis", redis, critical=False)
