"""What the agents share inside one worker: settings, the DLQ path, the PostgreSQL pools and
the Redis client. Connections open on first use and close once every flow has stopped (the
worker's entry point calls `close` last)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import faust
import mode
import redis.asyncio as aioredis

from runtime.health import HealthChecks
from runtime.lag import ConsumerGroups
from runtime.service import AnyFlow, FlowService, Running
from runtime.settings import ResolvedSettings
from sinks.postgres.databases import Databases
from topics.dlq import DeadLetters

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long closing may take: the pool waits this long for connections still in use, then
# terminates them.
CLOSE_DEADLINE_S = 2.0
REDIS_CONNECTIONS = 100
REDIS_WAIT_S = 20.0


class Resources:
    def __init__(self, app: faust.App, settings: ResolvedSettings) -> None:
        self.app = app
        self.settings = settings
        self.dead_letters = DeadLetters(app)
        # Flows add their components (providers, the CDN) next to Kafka, PostgreSQL and Redis.
        self.health = HealthChecks(worker=f"{settings.base.app_id}@{settings.base.web_port}")
        # Every consumer group the flows run, for the worker's one consumer-lag sampler.
        self.consumer_groups = ConsumerGroups()
        security = settings.base.security
        # A request waits for a free connection: redis-py 8 caps a pool at 100 connections and,
        # unblocked, fails the 101st (the router's lanes run that many jobs in a burst).
        self.redis = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=REDIS_CONNECTIONS,
                timeout=REDIS_WAIT_S,
                decode_responses=False,
                **security.redis.redis_kwargs(settings.redis_url),
            )
        )
        self.databases = Databases.from_settings(settings, max_size=8)
        self._closers: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._closed = False
        # The flows, each reading with a consumer of its own: at shutdown the worker stops them
        # all at once, before Faust stops the producer they publish with.
        self.flows: list[mode.ServiceT] = []
        # Each flow hosted by `flow_service`, by name, from its registration on: /ready waits
        # until every one has joined its consumer group.
        self.flow_states: dict[str, Running[Any]] = {}

    def flow_service(
        self,
        name: str,
        build: Callable[[], Awaitable[AnyFlow]],
        running: Running[Any] | None = None,
    ) -> type[mode.Service]:
        """The service that hosts flow `name` in this worker (for `app.service`): its group's
        lag is sampled with the others', and the worker stops it with the other flows."""
        resources = self
        running = running or Running[Any]()
        self.flow_states[name] = running

        class Hosted(FlowService):
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(
                    build,
                    resources.settings,
                    groups=resources.consumer_groups,
                    stop_together=resources.flows,
                    running=running,
                    name=name,
                    **kwargs,
                )

        return Hosted

    def on_close(self, what: str, close: Callable[[], Awaitable[None]]) -> None:
        """Close `what` (a client a flow shares, e.g. its HTTP clients) with the others, after
        every flow stopped."""
        self._closers.append((what, close))

    async def database(self) -> asyncpg.Pool:
        """The primary: for writes and the reads that must see them."""
        if self._closed:
            raise RuntimeError("the worker's PostgreSQL pool is closed: the worker stopped")
        return await self.databases.primary()

    async def read(self, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """`work(pool)` for reads that may lag a few seconds (reports, dashboards, cache
        warming): on the read replica while it is fresh enough, else on the primary (see
        sinks/postgres/databases.py)."""
        if self._closed:
            raise RuntimeError("the worker's PostgreSQL pool is closed: the worker stopped")
        return await self.databases.read(work)

    async def close(self, deadline: float = CLOSE_DEADLINE_S) -> None:
        """Close the flows' clients, the pool and the Redis client, each within `deadline`
        seconds. Call it only after every flow stopped: a write after this fails."""
        self._closed = True
        # One client failing to close must not leave the others open: each is tried in turn.
        for what, close in self._closers:
            try:
                await asyncio.wait_for(close(), deadline)
            except TimeoutError:
                log.warning("%s not closed within %.0f s; abandoned", what, deadline)
            except Exception:
                log.exception("%s failed to close; abandoned", what)
        await self.databases.close(deadline)
        try:
            await asyncio.wait_for(self.redis.aclose(), deadline)
        except TimeoutError:
            log.warning("Redis client not closed within %.0f s; abandoned", deadline)
        except Exception:
            log.exception("Redis client failed to close; abandoned")
