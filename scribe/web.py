"""The worker's HTTP pages on SCRIBE_WEB_PORT: /metrics (Prometheus) and /health."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from scribe.resources import Resources

CHECK_TIMEOUT_S = 2.0


async def _check(name: str, probe: Any) -> dict[str, str]:
    try:
        await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure is a health finding, reported with its reason
        return {"component": name, "status": "unhealthy", "reason": f"{type(exc).__name__}: {exc}"}
    return {"component": name, "status": "healthy", "reason": "ok"}


def register_pages(app: faust.App, resources: Resources) -> None:
    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        async def postgres() -> None:
            pool = await resources.database()
            await pool.fetchval("SELECT 1")

        async def redis() -> None:
            await resources.redis.ping()

        async def kafka() -> None:
            if not app.consumer.assignment() and not app.producer:
                raise RuntimeError("no consumer assignment and no producer")

        components = await asyncio.gather(
            _check("kafka", kafka), _check("postgres", postgres), _check("redis", redis)
        )
        healthy = all(c["status"] == "healthy" for c in components)
        body = {"status": "healthy" if healthy else "unhealthy", "components": components}
        return web.json(body, status=200 if healthy else 503)
