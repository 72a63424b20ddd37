"""Component health for /health, /ready and the dashboard.

A registry of named async checks: the core adds Kafka, PostgreSQL and Redis; a flow adds its
providers or its CDN with `resources.health.add(...)`. Each check says healthy, degraded or
unhealthy with a reason; a failing *critical* component makes the worker unhealthy, a failing
non-critical one (Redis, a provider, the CDN: work waits and retries) makes it degraded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx

from runtime.metrics import HEALTH_STATUS

DEFAULT_TIMEOUT_S = 2.0


class Status(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def gauge_value(self) -> int:
        """The value of `scribe_health_status`: 0 healthy, 1 degraded, 2 unhealthy."""
        return (Status.HEALTHY, Status.DEGRADED, Status.UNHEALTHY).index(self)


@dataclass(frozen=True)
class Finding:
    """What a check observed. A check may also just return None (healthy) or raise (unhealthy,
    the exception is the reason)."""

    status: Status
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)


Check = Callable[[], Awaitable[Finding | None]]


@dataclass(frozen=True)
class ComponentHealth:
    name: str
    status: Status
    reason: str
    critical: bool
    response_time_ms: float
    last_check: datetime
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "reason": self.reason,
            "critical": self.critical,
            "response_time_ms": round(self.response_time_ms, 2),
            "last_check": self.last_check.isoformat(),
            "details": dict(self.details),
        }


def overall_status(components: list[ComponentHealth]) -> Status:
    """Unhealthy if a critical component is; degraded if any component is not healthy."""
    if any(c.critical and c.status is Status.UNHEALTHY for c in components):
        return Status.UNHEALTHY
    if any(c.status is not Status.HEALTHY for c in components):
        return Status.DEGRADED
    return Status.HEALTHY


@dataclass(frozen=True)
class SystemHealthReport:
    """The product's SystemHealthReport: overall status, each component, when, since when."""

    overall_status: Status
    components: tuple[ComponentHealth, ...]
    timestamp: datetime
    uptime_seconds: float
    worker: str

    @property
    def http_status(self) -> int:
        """What a load balancer understands: 200 while the worker can do its work (healthy or
        degraded), 503 when it cannot."""
        return 503 if self.overall_status is Status.UNHEALTHY else 200

    def to_json(self) -> dict[str, Any]:
        return {
            "overall_status": self.overall_status.value,
            "timestamp": self.timestamp.isoformat(),
            "uptime_seconds": round(self.uptime_seconds, 1),
            "worker": self.worker,
            "components": [c.to_json() for c in self.components],
        }


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class _Registered:
    name: str
    check: Check
    critical: bool
    timeout: float


class HealthChecks:
    """The worker's named checks, run concurrently, each bounded by its timeout."""

    def __init__(self, worker: str = "scribe") -> None:
        self.worker = worker
        self.started = time.monotonic()
        self._checks: dict[str, _Registered] = {}
        self.last_report: SystemHealthReport | None = None

    def add(
        self, name: str, check: Check, *, critical: bool, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        if name in self._checks:
            raise ValueError(f"a health check named {name!r} is already registered")
        self._checks[name] = _Registered(name, check, critical, timeout)

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    async def _run_one(self, entry: _Registered) -> ComponentHealth:
        started = time.perf_counter()
        try:
            finding = await asyncio.wait_for(entry.check(), entry.timeout)
        except TimeoutError:
            finding = Finding(Status.UNHEALTHY, f"no answer within {entry.timeout:g} s")
        except Exception as exc:  # a failing check is a finding, reported with its reason
            finding = Finding(Status.UNHEALTHY, _reason(exc))
        if finding is None:
            finding = Finding(Status.HEALTHY, "ok")
        return ComponentHealth(
            name=entry.name,
            status=finding.status,
            reason=finding.reason,
            critical=entry.critical,
            response_time_ms=(time.perf_counter() - started) * 1000,
            last_check=datetime.now(UTC),
            details=finding.details,
        )

    async def run(self) -> SystemHealthReport:
        components = await asyncio.gather(*(self._run_one(e) for e in self._checks.values()))
        report = SystemHealthReport(
            overall_status=overall_status(list(components)),
            components=tuple(components),
            timestamp=datetime.now(UTC),
            uptime_seconds=time.monotonic() - self.started,
            worker=self.worker,
        )
        for component in components:
            HEALTH_STATUS.labels(component=component.name).set(component.status.gauge_value)
        self.last_report = report
        return report


def http_check(client: httpx.AsyncClient, url: str) -> Check:
    """A check for an HTTP dependency (an AI provider, the CDN purge API): 2xx is healthy, 429
    degraded (rate limited: calls wait), anything else or no answer unhealthy."""

    async def check() -> Finding:
        response = await client.get(url)
        code = response.status_code
        if 200 <= code < 300:
            return Finding(Status.HEALTHY, f"HTTP {code}")
        if code == 429:
            retry_after = response.headers.get("retry-after", "?")
            return Finding(Status.DEGRADED, f"HTTP 429 rate limited (Retry-After {retry_after})")
        return Finding(Status.UNHEALTHY, f"HTTP {code}")

    return check
