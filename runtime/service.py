"""The Faust worker hosts each flow as a `mode.Service` (Faust stays the process host: web
server, signals, its own timers). The service builds the flow and its consumer (through
`runtime.kafka`), adds its group to the worker's lag registry, runs the loop, and stops it in
order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, Generic, Protocol, TypeVar

import mode
from prometheus_client import Histogram

from runtime import kafka
from runtime.concurrent import ConcurrentRunner, RecordFlow
from runtime.flow import Flow, FlowRunner
from runtime.lag import ConsumerGroups
from runtime.metrics import GC_PAUSE_SECONDS
from runtime.settings import ResolvedSettings

log = logging.getLogger(__name__)

FLOW_FAILED = "the flow failed; stopping the worker"  # logged once, after the flow's name


class Runner(Protocol):
    """What the host uses of a runner (`FlowRunner`, `ConcurrentRunner`)."""

    assigned: bool

    async def start(self) -> None: ...
    async def run(self) -> None: ...
    async def stop(self) -> None: ...


R = TypeVar("R", bound=Runner)

# A full collection after this many generation-1 collections (Python's default: 10).
FULL_COLLECTION_EVERY = 100
# A young collection once this many more container objects were made than freed (Python's
# default: 700). A flow's work in flight (a world tick round's new states, a usage batch's
# events) lives a few hundred ms and is freed by reference counting, and a young collection
# walks every object made since the one before that is still alive: at 5,000 worlds, every
# world's current state. At 700 the collector took 9-10 % of the world flow's CPU; at 200,000
# a worker's work in flight still crossed it about twice a second, each collection a
# 100-200 ms stall of every flow that found nothing to free (bench/README.md).
YOUNG_COLLECTION_AFTER = 2_000_000


def freeze_long_lived() -> None:
    """Every object alive once a flow is built and started lives as long as the process:
    frozen, a full collection no longer walks it, and full collections come ten times rarer
    than Python's default. Unfrozen, a worker's full collections took 64-182 ms, each a stall
    of every flow (the usage flow's batches in flight made one every ~2 batches). Young
    collections come only once work in flight outgrows `YOUNG_COLLECTION_AFTER`, so garbage in
    reference cycles waits longer for them. Every collection from here on is timed
    (`time_collections`)."""
    time_collections()
    gc.collect()  # what is garbage now is not frozen with the rest
    gc.freeze()
    gc.set_threshold(*collector_thresholds())


def collector_thresholds() -> tuple[int, int, int]:
    """The collector's thresholds in a running worker (the middle one left as it is)."""
    _, gen1, _ = gc.get_threshold()
    return YOUNG_COLLECTION_AFTER, gen1, FULL_COLLECTION_EVERY


class _CollectionTimer:
    """The collector's callback: times each collection into the pause histogram's child of its
    generation. The children are looked up once, at install: this runs inside every collection."""

    __slots__ = ("pauses", "started")

    def __init__(self) -> None:
        self.pauses: tuple[Histogram, ...] = ()
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        # Collections never overlap, so one start time serves them all. Observing takes the
        # child's value locks inside a collection: safe, since under those locks runs only float
        # arithmetic, which allocates nothing the collector tracks, and Python 3.11 starts a
        # collection only on such an allocation, so none starts while a lock is held
        # (prometheus_client's multiprocess mode, whose lock does allocate, would deadlock here).
        if phase == "start":
            self.started = perf_counter()
        else:
            self.pauses[info["generation"]].observe(perf_counter() - self.started)


_COLLECTION_TIMER = _CollectionTimer()


def time_collections() -> None:
    """Time every garbage collection of this process into `scribe_gc_pause_seconds` by the
    generation collected: while one runs, no flow on the event loop moves. Installed once per
    process, however often called."""
    if _COLLECTION_TIMER in gc.callbacks:
        return
    _COLLECTION_TIMER.pauses = tuple(GC_PAUSE_SECONDS.labels(generation=str(g)) for g in range(3))
    gc.callbacks.append(_COLLECTION_TIMER)


# A batch flow or a per-record flow: the host builds the runner each needs.
AnyFlow = Flow[Any, Any] | RecordFlow[Any]


def runner_for(flow: AnyFlow, consumer: Any) -> FlowRunner[Any, Any] | ConcurrentRunner[Any]:
    if isinstance(flow, RecordFlow):
        return ConcurrentRunner(flow, consumer)
    return FlowRunner(flow, consumer)


class Running(Generic[R]):
    """Where a flow's runner can be found once its service has started (for /health and
    /ready)."""

    runner: R | None = None

    @property
    def joined(self) -> bool:
        """The flow's consumer holds its assignment: it is fetching."""
        return self.runner is not None and self.runner.assigned


class FlowService(mode.Service):
    """Runs the flow `build` returns for as long as the worker runs. `groups` is the worker's
    lag registry; `stop_together` the services the worker stops all at once when it stops,
    before its producer and pools."""

    def __init__(
        self,
        build: Callable[[], Awaitable[AnyFlow]],
        settings: ResolvedSettings,
        *,
        groups: ConsumerGroups | None = None,
        stop_together: list[Any] | None = None,
        running: Running[Any] | None = None,
        name: str = "flow",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.flow_name = name
        self.build = build
        self.settings = settings
        self.groups = groups
        self.running: Running[Any] = running or Running()
        self._group: str | None = None
        self._running: asyncio.Task[None] | None = None
        if stop_together is not None:
            stop_together.append(self)

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
            runner = runner_for(flow, consumer)
            self.running.runner = runner
            await runner.start()
            freeze_long_lived()
            if self.groups is not None:
                self._group = group
                self.groups.add(group, spec.topics, consumer)
            await runner.run()
        except Exception as error:
            log.exception("%s: %s", self.label, FLOW_FAILED)
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
        if self.groups is not None and self._group is not None:
            self.groups.discard(self._group)
