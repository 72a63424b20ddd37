"""Wiring: the invalidation flow as a service of the worker (with its health check), and
cache warming as an agent on world.events."""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any

import faust

from agents.context import Resources
from agents.invalidation import flow
from agents.invalidation.config import InvalidationSettings
from agents.invalidation.delivery import CdnSink, RedisSink
from agents.invalidation.hot_keys import worlds_to_warm
from agents.invalidation.warming import CacheWarmer
from cache import CacheClient
from runtime.flow import FlowRunner
from runtime.health import Finding, Status
from runtime.metrics import CACHE_WARMING
from runtime.service import Running
from schemas import DecodeError, decode
from schemas.events import WorldEvent
from topics.catalog import WORLD_EVENTS


def register(app: faust.App, resources: Resources) -> None:
    settings = resources.settings
    config = InvalidationSettings.from_env()
    warming_cache = CacheClient(settings.redis_url, name="warming", l1=False)
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
    # The warming agent below is Faust's and runs until Faust stops: its client closes after.
    resources.on_close("warming cache", warming_cache.close)

    # A Faust agent on world.events beside the world flow (which reads them in its own group).
    # Bad input is the world flow's to dead-letter, so here it is only skipped.
    @app.agent(resources.topic(WORLD_EVENTS), name="cache-warming")
    async def warm_loaded_worlds(stream: Any) -> None:
        warmer = CacheWarmer(resources.databases, warming_cache, config.warm_ttl_seconds)
        async for values in stream.take(500, within=0.2):
            events = []
            for value in values:
                if value is None:  # a tombstone: nothing to warm (the world flow dead-letters it)
                    continue
                with contextlib.suppress(DecodeError):
                    events.append(decode(value, WorldEvent))
            for world_id in worlds_to_warm(events):
                CACHE_WARMING.labels(outcome=await warmer.warm(world_id)).inc()
