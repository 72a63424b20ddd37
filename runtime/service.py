"""The Faust worker hosts each flow as a `mode.Service` (Faust stays the process host: web
server, signals, its own timers). The service builds the flow, its consumer (through
`runtime.kafka`) and its lag sampler, runs the loop, and stops it in order."""

from __future__ import annotations

import asyncio
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.build = build
        self.settings = settings
        self.on_lag = on_lag
        self.running = running or Running()
        self._offsets: GroupOffsets | None = None
        self._running: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
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
        await runner.start()
        self.running.runner = runner

    async def on_started(self) -> None:
        runner = self.running.runner
        assert runner is not None
        self._running = asyncio.create_task(self._run(runner), name=runner.spec.flow)

    async def _run(self, runner: FlowRunner[Any, Any]) -> None:
        try:
            await runner.run()
        except Exception as error:
            log.exception("%s: the flow failed; stopping the worker", runner.spec.flow)
            await self.crash(error)

    async def on_stop(self) -> None:
        if self.running.runner is not None:
            await self.running.runner.stop()
        if self._running is not None and not self._running.done():
            self._running.cancel()
        if self._offsets is not None:
            await self._offsets.close()


def hosted(
    build: Callable[[], Awaitable[Flow[Any, Any]]],
    settings: ResolvedSettings,
    on_lag: LagHook | None = None,
    running: Running | None = None,
) -> type[FlowService]:
    """A `FlowService` class Faust can instantiate with its own arguments (`app.service`)."""

    class Hosted(FlowService):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(build, settings, on_lag, running, **kwargs)

    return Hosted
