"""The Faust worker hosts each flow as a `mode.Service` (Faust stays the process host: web
server, signals, its own timers). The service builds the flow, its consumer (through
`runtime.kafka`) and its lag sampler, runs the loop, and stops it in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import mode
from aiokafka import TopicPartition

from runtime import kafka
from runtime.flow import Flow, FlowRunner
from runtime.lag import GroupOffsets, LagSampler
from runtime.settings import ResolvedSettings

log = logging.getLogger(__name__)

LagHook = Callable[[str, Mapping[TopicPartition, int]], None]


class Running:
    """Where a flow's runner can be found once its service has started (for /health)."""

    runner: FlowRunner[Any, Any] | None = None


class FlowService(mode.Service):
    """Runs the flow `build` returns for as long as the worker runs."""

    def __init__(
        self,
        build: Callable[[], Awaitable[Flow[Any, Any]]],
        settings: ResolvedSettings,
        on_lag: LagHook | None = None,
        running: Running | None = None,
        name: str = "flow",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.flow_name = name
        self.build = build
        self.settings = settings
        self.on_lag = on_lag
        self.running = running or Running()
        self._offsets: GroupOffsets | None = None
        self._running: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        return f"Flow[{self.flow_name}]"

    async def on_started(self) -> None:
        # Built in the background: a flow waiting for its servers (Redis, PostgreSQL) does not
        # hold up the worker's start; /health says what it waits for.
        self._running = asyncio.create_task(self._run(), name=f"flow.{self.label}")

    async def _run(self) -> None:
        try:
            flow = await self.build()
            spec, settings = flow.spec, self.settings
            group = spec.group(settings)
            consumer = kafka.consumer(settings, group, **spec.consumer_options())
            self._offsets = GroupOffsets(
                settings.bootstrap_servers, group, settings.kafka_client_options
            )
            runner = FlowRunner(
                flow, consumer, lag=LagSampler(self._offsets, spec.topics), on_lag=self.on_lag
            )
            self.running.runner = runner
            await runner.start()
            await runner.run()
        except Exception as error:
            log.exception("%s: the flow failed; stopping the worker", self.label)
            if self.running.runner is not None:
                await self.running.runner.stop()
            await self.crash(error)

    async def on_stop(self) -> None:
        runner = self.running.runner
        if runner is not None:
            await runner.stop()  # bounded; the loop returns once it is done
        if self._running is not None and not self._running.done():
            # Still building (waiting for a server) or past the stop deadline.
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._running
        if self._offsets is not None:
            await self._offsets.close()


def hosted(
    name: str,
    build: Callable[[], Awaitable[Flow[Any, Any]]],
    settings: ResolvedSettings,
    on_lag: LagHook | None = None,
    running: Running | None = None,
) -> type[mode.Service]:
    """A `FlowService` class Faust can instantiate with its own arguments (`app.service`)."""

    class Hosted(FlowService):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(build, settings, on_lag, running, name=name, **kwargs)

    return Hosted
