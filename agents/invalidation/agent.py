"""Wiring: the invalidation flows, Redis and CDN (with one health check), and the cache-warming
flow on world.events, each as a service of the worker."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import faust

from agents.context import Resources
from agents.invalidation import flow, warming_flow
from agents.invalidation.config import InvalidationSettings
from agents.invalidation.delivery import AfterRedis, CdnSink, RedisSink
from runtime.flow import FlowRunner
from runtime.health import Finding, Status
from runtime.service import Running


def register(app: faust.App, resources: Resources) -> None:
    config = replace(
        InvalidationSettings.from_env(),
        fetch_wait_ms=resources.settings.base.fetch_wait_ms(InvalidationSettings.fetch_wait_ms),
    )
    to_redis: Running[FlowRunner[Any, Any]] = Running()
    to_cdn: Running[FlowRunner[Any, Any]] = Running()

    async def flow_health() -> Finding:
        return health(to_redis.runner, to_cdn.runner)

    resources.health.add("invalidation", flow_health, critical=False)

    build = partial(flow.build, resources, config)
    app.service(resources.flow_service(flow.INVALIDATION.flow, build, to_redis))
    build_cdn = partial(flow.build_cdn, resources, config)
    app.service(resources.flow_service(flow.CDN_INVALIDATION.flow, build_cdn, to_cdn))
    warm = partial(warming_flow.build, resources, config)
    app.service(resources.flow_service(warming_flow.WARMING.flow, warm))


def health(redis: FlowRunner[Any, Any] | None, cdn: FlowRunner[Any, Any] | None) -> Finding:
    """The `invalidation` check of /health, over both flows (None: not running yet)."""
    if redis is None:
        return Finding(Status.DEGRADED, "starting: waiting for Redis")
    details = {"uncommitted": redis.in_hand, "paused": redis.paused}
    if cdn is not None:
        details |= {"cdn_uncommitted": cdn.in_hand, "cdn_paused": cdn.paused}
    if any(isinstance(s, RedisSink) and s.down for s in redis.flow.sinks):
        return Finding(Status.DEGRADED, "Redis is down: partitions paused", details)
    for sink in cdn.flow.sinks if cdn is not None else ():
        if isinstance(sink, CdnSink) and sink.retrying:
            reason, retry = sink.retry_status()
            return Finding(Status.DEGRADED, reason, details | retry)
        if isinstance(sink, AfterRedis) and sink.waiting:
            reason = "CDN purges wait for the Redis flow to commit past them"
            return Finding(Status.DEGRADED, reason, details)
    if redis.paused or (cdn is not None and cdn.paused):
        return Finding(Status.DEGRADED, "backlog full: partitions paused", details)
    return Finding(Status.HEALTHY, "consuming", details)
