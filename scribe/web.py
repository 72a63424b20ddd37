"""The worker's HTTP pages on SCRIBE_WEB_PORT: /metrics (Prometheus), /health and /ready (the
SystemHealthReport, with status codes a load balancer understands), and the live dashboard:
/dashboard (one static page), /dashboard/stream (server-sent events), /dashboard/frame (JSON)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

import faust
from aiohttp import web as aiohttp_web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runtime.health import HealthChecks
from runtime.service import Running
from scribe.dashboard.feed import DashboardFeed

DASHBOARD_PAGE = files("scribe.dashboard").joinpath("page.html")
STREAM_ERRORS = (ConnectionError,)  # the page closed its connection


def readiness(health_status: int, joining: Sequence[str] = ()) -> tuple[bool, str]:
    """Ready for traffic: no critical component is down and every flow has joined its
    consumer group, with no rebalance under way (`joining`: those that have not yet, or are
    still waiting for a server they need, see /health). A new group's join takes seconds; a
    worker that answered ready meanwhile left what was published right after unread until
    then."""
    if health_status != 200:
        return False, "a critical component is unhealthy"
    if joining:
        return False, f"flows not consuming yet (joining their groups): {', '.join(joining)}"
    return True, "ok"


def joining(flows: Mapping[str, Running[Any]]) -> list[str]:
    """The flows whose consumer has not joined its group yet (or is not built yet)."""
    return sorted(name for name, running in flows.items() if not running.joined)


def register_pages(
    app: faust.App,
    health: HealthChecks,
    feed: DashboardFeed,
    flows: Mapping[str, Running[Any]] | None = None,
) -> None:
    """`flows`: the worker's flows by name (`Resources.flow_states`), for /ready."""
    page = DASHBOARD_PAGE.read_text(encoding="utf-8")
    flows = flows if flows is not None else {}

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        report = await health.run()
        return web.json(report.to_json(), status=report.http_status)

    @app.page("/ready")
    async def ready_page(web: Any, request: Any) -> Any:
        report = await health.run()
        ready, reason = readiness(report.http_status, joining(flows))
        body = {"ready": ready, "reason": reason, "health": report.to_json()}
        return web.json(body, status=200 if ready else 503)

    @app.page("/dashboard")
    async def dashboard(web: Any, request: Any) -> Any:
        return web.html(page)

    @app.page("/dashboard/frame")
    async def dashboard_frame(web: Any, request: Any) -> Any:
        if feed.latest is None:
            return web.json({"error": "no frame yet; the feed starts with the worker"}, status=503)
        return web.json(feed.latest)

    @app.page("/dashboard/stream")
    async def dashboard_stream(web: Any, request: Any) -> Any:
        response = aiohttp_web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue = feed.subscribe()
        try:
            await response.write(b"retry: 2000\n\n")
            while (message := await queue.get()) is not None:
                await response.write(message)
        except STREAM_ERRORS:
            pass  # the page went away: only its subscription is left to drop
        finally:
            feed.unsubscribe(queue)
        return response
