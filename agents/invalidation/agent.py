"""Wiring: the invalidation flow (with its health check) and the cache-warming flow on
world.events, each as a service of the worker."""

from __future__ import annotations

from functools import partial
from typing import Any

import faust

from agents.context import Resources
from agents.invalidation import flow, warming_flow
from agents.invalidation.config import InvalidationSettings
from agents.invalidation.delivery import CdnSink, RedisSink
from runtime.flow import FlowRunner
from runtime.health import Finding, Status
from runtime.service import Running


def register(app: faust.App, resources: Resources) -> None:
    config = InvalidationSettings.from_env()
    running: Running[FlowRunner[Any, Any]] = Running()

    async def flow_health() -> Finding:
        runner = running.runner
        if runner is None:
            return Finding(Status.DEGRADED, "starting: waiting for Redis")
        details = {"uncommitted": runner.in_hand, "paused": runner.paused}
        if any(isinstance(s, RedisSink) and s.down for s in runner.flow.sinks):
            return Finding(Status.DEGRADED, "Redis is down: partitions paused", details)
        for sink in runner.flow.sinks:
            if isinstance(sink, CdnSink) and sink.retrying:
                reason, retry = sink.retry_status()
                return Finding(Status.DEGRADED, reason, details | retry)
        if runner.paused:
            return Finding(Status.DEGRADED, "backlog full: partitions paused", details)
        return Finding(Status.HEALTHY, "consuming", details)

    resources.health.add("invalidation", flow_health, critical=False)

    build = partial(flow.build, resources, config)
    app.service(resources.flow_service(flow.INVALIDATION.flow, build, running))
    warm = partial(warming_flow.build, resources, config)
    app.service(resources.flow_service(warming_flow.WARMING.flow, warm))
