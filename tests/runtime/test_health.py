"""Health checks: each component's finding, the overall status, and the codes a load balancer
reads; `http_check` against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from aiohttp import web

from devkit.stack.processes import free_port
from runtime.health import (
    ComponentHealth,
    Finding,
    HealthChecks,
    Status,
    http_check,
    overall_status,
)
from scribe.web import readiness


def _component(status: Status, critical: bool) -> ComponentHealth:
    return ComponentHealth("c", status, "r", critical, 1.0, datetime.now(UTC))


@pytest.mark.parametrize(
    ("components", "expected"),
    [
        ([], Status.HEALTHY),
        ([(Status.HEALTHY, True), (Status.HEALTHY, False)], Status.HEALTHY),
        ([(Status.HEALTHY, True), (Status.UNHEALTHY, False)], Status.DEGRADED),
        ([(Status.DEGRADED, True), (Status.HEALTHY, False)], Status.DEGRADED),
        ([(Status.UNHEALTHY, True), (Status.HEALTHY, False)], Status.UNHEALTHY),
        ([(Status.UNHEALTHY, True), (Status.DEGRADED, False)], Status.UNHEALTHY),
    ],
)
def test_overall_status(components: list[tuple[Status, bool]], expected: Status) -> None:
    assert overall_status([_component(s, c) for s, c in components]) is expected


async def test_a_failing_non_critical_component_degrades_and_a_critical_one_fails() -> None:
    async def ok() -> None:
        return None

    async def refused() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    async def slow() -> None:
        await asyncio.sleep(5)

    async def busy() -> Finding:
        return Finding(Status.DEGRADED, "rate limited", {"retry_after": 3})

    checks = HealthChecks(worker="w@1")
    checks.add("kafka", ok, critical=True)
    checks.add("redis", refused, critical=False)
    checks.add("cdn", busy, critical=False)
    report = await checks.run()
    assert report.overall_status is Status.DEGRADED
    assert report.http_status == 200
    by_name = {c.name: c for c in report.components}
    assert by_name["kafka"].status is Status.HEALTHY and by_name["kafka"].reason == "ok"
    assert by_name["redis"].status is Status.UNHEALTHY
    assert by_name["redis"].reason == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert by_name["cdn"].details == {"retry_after": 3}

    checks.add("postgres", slow, critical=True, timeout=0.1)
    report = await checks.run()
    assert report.overall_status is Status.UNHEALTHY
    assert report.http_status == 503
    postgres = next(c for c in report.components if c.name == "postgres")
    assert postgres.reason == "no answer within 0.1 s"
    assert postgres.response_time_ms < 2000


async def test_report_json_has_the_system_health_report_shape() -> None:
    async def ok() -> None:
        return None

    checks = HealthChecks(worker="scribe@6066")
    checks.add("kafka", ok, critical=True)
    body = (await checks.run()).to_json()
    assert set(body) == {"overall_status", "timestamp", "uptime_seconds", "worker", "components"}
    assert body["overall_status"] == "healthy"
    (kafka,) = body["components"]
    assert set(kafka) == {
        "name",
        "status",
        "reason",
        "critical",
        "response_time_ms",
        "last_check",
        "details",
    }
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None


def test_a_check_name_is_registered_once() -> None:
    async def ok() -> None:
        return None

    checks = HealthChecks()
    checks.add("redis", ok, critical=False)
    with pytest.raises(ValueError, match="already registered"):
        checks.add("redis", ok, critical=False)


def test_ready_only_when_no_critical_component_is_down() -> None:
    assert readiness(health_status=200) == (True, "ok")
    assert readiness(health_status=503) == (False, "a critical component is unhealthy")


def test_not_ready_while_a_flow_joins_its_consumer_group() -> None:
    assert readiness(200, joining=["invalidation", "world"]) == (
        False,
        "flows not consuming yet (joining their groups): invalidation, world",
    )
    assert readiness(200, joining=[]) == (True, "ok")


@pytest.fixture
async def http_server() -> AsyncIterator[str]:
    """A real HTTP server on loopback answering /ok, /busy and /broken."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=429, headers={"Retry-After": "7"})

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/busy", busy)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_http_check_maps_status_codes(http_server: str) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        checks = HealthChecks()
        checks.add("provider:ok", http_check(client, f"{http_server}/ok"), critical=False)
        checks.add("provider:busy", http_check(client, f"{http_server}/busy"), critical=False)
        checks.add("cdn", http_check(client, f"{http_server}/broken"), critical=False)
        closed = f"http://127.0.0.1:{free_port()}/"
        checks.add("gone", http_check(client, closed), critical=False)
        report = await checks.run()
    by_name = {c.name: c for c in report.components}
    assert by_name["provider:ok"].status is Status.HEALTHY
    assert by_name["provider:busy"].status is Status.DEGRADED
    assert by_name["provider:busy"].reason == "HTTP 429 rate limited (Retry-After 7)"
    assert by_name["cdn"].status is Status.UNHEALTHY and by_name["cdn"].reason == "HTTP 503"
    assert by_name["gone"].status is Status.UNHEALTHY
    assert by_name["gone"].reason.startswith("ConnectError")
    assert report.overall_status is Status.DEGRADED  # none of them is critical
