"""A flow is a declaration: what it reads (`ConsumerSpec`), how a record becomes an event
(`decode`, bad input to `dead_letter`), what a batch of events becomes (`handle`, pure or
nearly) and where that goes (`sinks`). `FlowRunner` is the one loop under every flow:

    poll -> decode (dead letters) -> batch -> handle -> sinks write -> producer flush -> commit

Batches are written strictly in order; the next one is read and decoded while the one before
is written, and keeps filling (up to `max_batch`) until that write is done. A sink that can
(`PreparingSink`) is handed a batch that fills up meanwhile at once, to prepare it (stage its
rows) while the one before is written. Otherwise a batch
is due when the flow's `window` says (by default `spec.window_seconds` after its first record).
A flow with `commit_behind` hands the next batch to its sinks once the one before is written,
while that one's commit is still in flight (commits stay in order, one after another), as
long as its window does not hold batches open.
Stopping is bounded and ordered: timers stop, reading stops, the batch in hand is finished
within the deadline or abandoned uncommitted, the flow writes what it holds for its partitions,
the producer is flushed, the consumer leaves its group, and only then are the sinks closed, so
nothing can write to a closed pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from runtime import tracing
from runtime.checkpoint import Checkpoint, Flush, nothing_to_flush
from runtime.sink import PreparingSink, Sink, SinkBackpressure, SinkStopping
from runtime.source import (
    Batch,
    BatchSource,
    Consumer,
    DeadLetterWriter,
    Received,
    Record,
    Rejected,
)
from runtime.spec import ConsumerSpec

log = logging.getLogger(__name__)

E = TypeVar("E")
T = TypeVar("T")

FIRST_PAUSE_S = 0.5
# Behind the writes, a commit goes out at most this often while more are queued. Each is a
# round trip to the group coordinator (6 ms and 0.26 ms of CPU on one Apache Kafka broker), and
# small batches can come faster than that: one commit each would queue without end. Stopping
# and rebalancing still wait for the last one.
COMMIT_BEHIND_EVERY_S = 0.1
MAX_PAUSE_S = 10.0
POLL_RECORDS_WHILE_WRITING = 1000


@dataclass(frozen=True)
class Timer:
    """Work a flow does every `seconds` besides its batches (a sweep, a tick round). It runs
    while the flow runs and stops before the sinks close; a failure is logged, not fatal."""

    name: str
    seconds: float
    action: Callable[[], Awaitable[None]]


class BatchWindow(Protocol):
    """When a batch that holds records is due. The runner reports what each poll read; a batch
    is also handed over when full, and never while the one before it is being written."""

    def arrived(self, records: int, now: float) -> None: ...
    def time_left(self, opened_at: float, now: float) -> float:
        """Seconds until the batch opened at `opened_at` is due; 0 or less: due now."""
        ...


@dataclass(frozen=True)
class FixedWindow:
    """Due `seconds` after the batch's first record (0: a batch is what one poll returned)."""

    seconds: float

    def arrived(self, records: int, now: float) -> None:
        pass

    def time_left(self, opened_at: float, now: float) -> float:
        return opened_at + self.seconds - now


StartAt = Callable[[frozenset[TopicPartition]], Awaitable[Mapping[TopicPartition, int]]]


class Rebalance(Protocol):
    """What a flow that keeps state per partition does when the group moves them. `revoked` is
    called once the batch in flight is written, before another member may take the partitions,
    and at shutdown for what is still owned."""

    def assigned(
        self, partitions: frozenset[TopicPartition], counts: Mapping[str, int]
    ) -> None: ...
    async def revoked(self, partitions: frozenset[TopicPartition]) -> None: ...


@dataclass(frozen=True)
class Flow(Generic[E, T]):
    spec: ConsumerSpec
    decode: Callable[[Record], E | Rejected]
    dead_letter: DeadLetterWriter
    # With a `PreparingSink`, a full batch is handled while the batch before it is written,
    # so `handle` must not depend on that write.
    handle: Callable[[list[Received[E]]], T]
    sinks: Sequence[Sink[T]]
    # Errors under which a batch is written again after a pause (a server down), rather than
    # ending the flow.
    retryable: tuple[type[BaseException], ...] = (KafkaError, OSError)
    flush: Flush = nothing_to_flush
    timers: Sequence[Timer] = ()
    rebalance: Rebalance | None = None
    # None: `FixedWindow(spec.window_seconds)`.
    window: BatchWindow | None = None
    # While the window hands batches over at once (not held open), the next batch is written
    # while this one's commit is in flight, instead of after it: for a flow whose sinks are
    # idempotent and whose latency matters (a commit is a broker round trip, on Apache Kafka
    # often longer than the write). A window held open (under load) commits in line, so the
    # next batch keeps filling meanwhile. A crash between a write and its commit means the
    # batch is read and written again, as without it.
    commit_behind: bool = False
    # Released after the sinks (a pool the sinks share, a cache client).
    closers: Sequence[Callable[[], Awaitable[None]]] = field(default_factory=tuple)
    # Where newly assigned partitions start, for those it names; the others start at the
    # group's committed offset (or the log's start). For a group added beside another on the
    # same topic, to start where that one is rather than read the whole retention again.
    starts: StartAt | None = None


@dataclass(frozen=True)
class Prepared(Generic[T]):
    """A batch's items, handed to the preparing sinks while the batch before it was written."""

    items: T
    task: asyncio.Task[None]


async def bounded_step(
    flow_log: logging.LoggerAdapter[logging.Logger],
    flow: str,
    what: str,
    step: Awaitable[None],
    seconds: float,
) -> None:
    """One step of a flow's stop, within `seconds`: one that overruns or fails is logged and
    given up, so the steps after it (closing the pools) still run."""
    try:
        await asyncio.wait_for(step, seconds)
    except TimeoutError:
        flow_log.warning("%s: %s took over %.0f s; given up", flow, what, seconds)
    except Exception:
        flow_log.exception("%s: %s failed", flow, what)


class FlowRunner(Generic[E, T]):
    """Runs one flow on one consumer: `start`, then `run` (returns once stopped), `stop`."""

    def __init__(self, flow: Flow[E, T], consumer: Consumer) -> None:
        self.flow = flow
        self.spec = flow.spec
        # Each line names the flow twice: in its text, and as `flow` in a JSON log.
        self.log = logging.LoggerAdapter(log, {"flow": flow.spec.flow})
        self.source: BatchSource[E] = BatchSource(
            flow.spec, consumer, flow.decode, flow.dead_letter
        )
        self.window = flow.window or FixedWindow(flow.spec.window_seconds)
        self._preparing_sinks = [s for s in flow.sinks if isinstance(s, PreparingSink)]
        self._preparing: asyncio.Task[None] | None = None
        self._writing_lock = asyncio.Lock()  # held while a batch is written and committed
        self._stopping = asyncio.Event()
        self._filling: Batch[E] = Batch()
        self._writing: asyncio.Task[None] | None = None
        self._committing: asyncio.Task[bool] | None = None  # the last commit (commit_behind)
        # Offsets a commit behind left to the one queued after it, and when one last went out.
        self._deferred: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._reading: asyncio.Task[None] | None = None
        self._timers: list[asyncio.Task[None]] = []
        self._stop: asyncio.Future[None] | None = None
        self._abandoned = False  # stopping cancelled the loop itself
        # A batch was left unwritten: a later one must not be committed, its offsets would
        # carry the commit past the records left behind.
        self._gave_up = False
        # Why a flush behind the writes failed: the flow ends with it.
        self._unflushed: BaseException | None = None
        # The group has given this member its partitions (none, in a group larger than the
        # topic) and no rebalance is under way: the flow is fetching. /ready waits for it.
        self.assigned = False

    # -- what /health and tests read --------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self.source.paused

    @property
    def in_hand(self) -> int:
        """Records read and not yet written (the batch filling and the one being written)."""
        return self._filling.records + self._writing_records

    @property
    def idle(self) -> bool:
        return (
            self._filling.records == 0
            and (self._writing is None or self._writing.done())
            and (self._committing is None or self._committing.done())
        )

    _writing_records = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.source.start(self)

    async def run(self) -> None:
        """Read and write batches until `stop`; a failure that is not retryable ends the flow
        with that error (after the bounded shutdown)."""
        self._reading = asyncio.current_task()
        self._timers = [
            asyncio.create_task(self._every(timer), name=f"{self.spec.flow}.{timer.name}")
            for timer in self.flow.timers
        ]
        try:
            await self._read()
        except asyncio.CancelledError:
            if not self._abandoned:
                raise
        finally:
            self._reading = None
        if self._unflushed is not None:
            raise self._unflushed

    async def stop(self) -> None:
        """Stop in order, each step within `spec.stop_seconds`. Safe to call more than once: a
        second call returns when the first stop is done, not before."""
        if self._stop is None:
            self._stopping.set()
            self._stop = asyncio.ensure_future(self._stop_in_order())
        await asyncio.shield(self._stop)

    async def _stop_in_order(self) -> None:
        deadline = self.spec.stop_seconds
        # A timer's round in progress (a world tick round writing to PostgreSQL) finishes;
        # one still running at the deadline is cancelled.
        await self._finished_all(self._timers, deadline)
        await self._cancel(self._timers)
        reading = self._reading
        if reading is not None and not await self._finished(reading, deadline):
            self.log.warning(
                "%s: batch not written within %.0f s of stopping; abandoned uncommitted",
                self.spec.flow,
                deadline,
            )
            if self._writing is not None:
                # No batch after it may be written: its commit would pass these records.
                self._gave_up = True
                self._writing.cancel()
            if not await self._finished(reading, deadline):
                self._abandoned = True
                reading.cancel()
        await self._bounded("writing what the flow holds", self._release_owned(), deadline)
        await self._bounded("flushing the producer", self.flow.flush(), deadline)
        await self._bounded("leaving the group", self.source.consumer.stop(), deadline)
        for sink in self.flow.sinks:
            await self._bounded(f"closing {type(sink).__name__}", sink.close(), deadline)
        for close in self.flow.closers:
            await self._bounded("closing", close(), deadline)

    @staticmethod
    async def _finished_all(tasks: Sequence[asyncio.Task[Any]], seconds: float) -> None:
        if tasks:
            await asyncio.wait(tasks, timeout=seconds)

    @staticmethod
    async def _finished(task: asyncio.Task[None], seconds: float) -> bool:
        """Whether `task` ended (however) within `seconds`."""
        await asyncio.wait([task], timeout=seconds)
        return task.done()

    async def _release_owned(self) -> None:
        """Leaving the group does not call the listener: the flow writes what it holds for its
        partitions here, so their next owner starts from it."""
        async with self._writing_lock:
            await self._committed()
            owned = frozenset(self.source.owned)
            self.source.forget(owned)
            if owned and self.flow.rebalance is not None:
                await self.flow.rebalance.revoked(owned)

    async def _bounded(self, what: str, step: Awaitable[None], seconds: float) -> None:
        await bounded_step(self.log, self.spec.flow, what, step, seconds)

    @staticmethod
    async def _cancel(tasks: Sequence[asyncio.Task[Any]]) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the loop ----------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while not self._stopping.is_set():
                if self._writing is not None and self._writing.done():
                    self._writing.result()  # a failure that is not retryable ends the flow
                    self._writing = None
                try:
                    read = await self.source.fill(
                        self._filling,
                        self._poll_ms(),
                        until=self._due_when_written(),
                        most=self._poll_most(),
                    )
                except self.flow.retryable as error:
                    self.log.warning("%s: poll failed (%r); retrying", self.spec.flow, error)
                    await asyncio.sleep(FIRST_PAUSE_S)
                    continue
                if read:
                    self.window.arrived(read, time.monotonic())
                if self._due():
                    await self._hand_over()
            if self._filling.records:
                await self._hand_over()  # what was read is written (within the stop deadline)
            await self._written()
        finally:
            if self._writing is not None and not self._writing.done():
                await self._cancel([self._writing])  # abandoned: its offsets stay uncommitted
            if self._preparing is not None and not self._preparing.done():
                await self._cancel([self._preparing])

    def _poll_most(self) -> int | None:
        """While a batch is written, a poll takes at most `POLL_RECORDS_WHILE_WRITING`: the
        records a poll returns are unpacked without a turn of the event loop (~4 us each),
        and the write's round trips wait for that."""
        if self._writing is None or self._writing.done():
            return None
        return POLL_RECORDS_WHILE_WRITING

    def _poll_ms(self) -> int:
        """A poll ends early for an open batch's window; a write's end ends it too."""
        opened_at = self._filling.opened_at
        if opened_at is not None:
            left = self.window.time_left(opened_at, time.monotonic())
            if left > 0:
                return max(1, min(int(left * 1000), self.spec.poll_ms))
        return self.spec.poll_ms

    def _due_when_written(self) -> asyncio.Future[None] | None:
        """The write the open batch waits for: the poll ends when it does, so the batch is
        handed over at once rather than at the poll's end."""
        if self._filling.opened_at is None or self._writing is None or self._writing.done():
            return None
        return self._writing

    def _due(self) -> bool:
        batch = self._filling
        if batch.opened_at is None:
            return False
        writing = self._writing is not None and not self._writing.done()
        if batch.records >= self.spec.max_batch:
            return True
        if self.window.time_left(batch.opened_at, time.monotonic()) > 0:
            return False
        return not writing

    async def _written(self) -> None:
        """Wait for the batch being written; one that stopping abandoned is no error."""
        writing = self._writing
        if writing is None:
            return
        try:
            await writing
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not writing.cancelled() or (current is not None and current.cancelling()):
                raise

    async def _hand_over(self) -> None:
        prepared = self._prepare_ahead(self._filling)
        await self._written()
        batch, self._filling = self._filling, Batch()
        self._writing_records = batch.records
        self._writing = asyncio.create_task(
            self._write(batch, prepared), name=f"{self.spec.flow}.write"
        )
        if prepared is not None:
            # The prepared write goes out before the next poll, whose records are unpacked
            # (tens of ms for a full batch) without a turn of the event loop.
            await asyncio.sleep(0)

    def _prepare_ahead(self, batch: Batch[E]) -> Prepared[T] | None:
        """While a write is in flight, hand the batch due after it to the sinks that prepare."""
        if not self._preparing_sinks or self._writing is None or self._writing.done():
            return None
        if self._preparing is not None and not self._preparing.done():
            return None  # one batch prepared at a time
        items = self.flow.handle(batch.received)
        self._preparing = asyncio.create_task(
            self._prepare(items), name=f"{self.spec.flow}.prepare"
        )
        return Prepared(items, self._preparing)

    async def _prepare(self, items: T) -> None:
        for sink in self._preparing_sinks:
            try:
                await sink.prepare(items)
            except Exception:  # the contract says it does not raise; its write does the work
                self.log.exception("%s: %s.prepare failed", self.spec.flow, type(sink).__name__)

    async def _discard(self, items: T) -> None:
        """Prepared items the sinks did not write (a rebalance, an abandoned write) released."""
        for sink in self._preparing_sinks:
            try:
                await sink.discard(items)
            except Exception:
                self.log.exception("%s: %s.discard failed", self.spec.flow, type(sink).__name__)

    async def _write(self, batch: Batch[E], prepared: Prepared[T] | None = None) -> None:
        """Write `batch` through the checkpoint, again after a pause while a sink pushes back
        or a server is down; stopping abandons it uncommitted."""
        try:
            if prepared is not None and not prepared.task.done():
                await asyncio.wait([prepared.task])
            with tracing.consuming_batch(
                f"{self.spec.flow} batch",
                (r.origin.headers for r in batch.received),
                {"messaging.batch.message_count": batch.records, "scribe.flow": self.spec.flow},
            ):
                await self._write_traced(batch, prepared)
        finally:
            if prepared is not None:
                await self._discard(prepared.items)  # nothing left once written

    async def _write_traced(self, batch: Batch[E], prepared: Prepared[T] | None) -> None:
        pause = FIRST_PAUSE_S
        checkpoint: Checkpoint[T] | None = None
        try:
            while not self._gave_up:
                async with self._writing_lock:
                    owned = self.source.still_owned(batch)
                    if not owned.offsets:
                        return  # every partition went to another member: theirs to write
                    if owned is not batch or checkpoint is None:
                        if prepared is not None and owned is batch:
                            items = prepared.items
                        else:
                            # A rebalance took some of the batch since it was prepared: what
                            # was prepared is released before the rest is handled.
                            if prepared is not None:
                                await self._discard(prepared.items)
                            items = self.flow.handle(owned.received)
                        prepared, batch = None, owned
                        checkpoint = Checkpoint(
                            items,
                            batch.offsets,
                            self.flow.sinks,
                            self.flow.flush,
                            self._commit,
                        )
                    try:
                        await checkpoint.run()
                        self.source.resume()
                        return
                    except SinkBackpressure as pushed_back:
                        self.source.pause()
                        wait = pushed_back.retry_after
                        self.log.warning("%s: %s", self.spec.flow, pushed_back)
                    except self.flow.retryable as error:
                        wait, pause = pause, min(pause * 2, MAX_PAUSE_S)
                        self.log.warning(
                            "%s: batch not written (%r); retry in %.1f s",
                            self.spec.flow,
                            error,
                            wait,
                        )
                    except SinkStopping as error:
                        self._give_up(str(error))
                        return
                # A stop ends the pause at once: a sink may push back for tens of seconds.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)
                if self._stopping.is_set():
                    self._give_up("stopping")
                    return
        finally:
            self._writing_records = 0

    async def _commit(self, offsets: Mapping[TopicPartition, int], flush: Flush) -> bool:
        now = time.monotonic()
        if not self.flow.commit_behind or self.window.time_left(now, now) > 0:
            await self._committed()
            await flush()
            return await self.source.commit(offsets)
        self._committing = asyncio.create_task(
            self._commit_after(self._committing, offsets, flush), name=f"{self.spec.flow}.commit"
        )
        return True

    async def _commit_after(
        self,
        previous: asyncio.Task[bool] | None,
        offsets: Mapping[TopicPartition, int],
        flush: Flush,
    ) -> bool:
        """Flush, then commit `offsets`, once the commit before has ended, so commits go in
        order. A flush that fails stops the flow: no later batch's offsets may be committed
        past sends that may be lost, so they are all read again after the restart. With
        another commit queued behind, one less than `COMMIT_BEHIND_EVERY_S` after the last
        leaves its offsets to that one."""
        if previous is not None:
            await asyncio.wait([previous])
        if self._gave_up:
            return False
        try:
            await flush()
        except Exception as error:
            self._unflushed = error
            self._give_up(f"sends not acknowledged: {error!r}")
            return False
        offsets, self._deferred = {**self._deferred, **offsets}, {}
        now = time.monotonic()
        queued_behind = self._committing is not asyncio.current_task()
        if queued_behind and now - self._last_commit < COMMIT_BEHIND_EVERY_S:
            self._deferred = offsets
            return True
        self._last_commit = now
        try:
            return await self.source.commit(offsets)
        except Exception:
            self.log.exception(
                "%s: offsets not committed; the batch will be re-read", self.spec.flow
            )
            return False

    async def _committed(self) -> None:
        """Wait for a commit still in flight (`commit_behind`), so whoever reads the
        partitions next starts after what was written."""
        if self._committing is not None:
            await asyncio.wait([self._committing])

    def _give_up(self, why: str) -> None:
        """Leave the batch uncommitted and take no other: it is read again after the restart."""
        self._gave_up = True
        self._stopping.set()
        self.log.warning("%s: batch abandoned uncommitted (%s)", self.spec.flow, why)

    # -- rebalance (called by the source's listener) -----------------------------------------

    async def partitions_revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Waits for the batch being written, then lets the flow write what it holds for these
        partitions before another member may take them."""
        self.assigned = False
        async with self._writing_lock:
            await self._committed()
            self.source.forget(partitions)
            if self.flow.rebalance is not None and partitions:
                await self.flow.rebalance.revoked(partitions)

    async def partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        if self._stopping.is_set():
            return  # a join finishing while the worker leaves: it will own nothing
        self.assigned = True
        self.log.info(
            "%s: assigned partitions %s",
            self.spec.flow,
            ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(partitions)) or "none",
        )
        if self.flow.starts is not None:
            await self._start(self.flow.starts, partitions)
        if self.flow.rebalance is not None:
            self.flow.rebalance.assigned(partitions, self.source.partition_counts())

    async def _start(self, starts: StartAt, partitions: frozenset[TopicPartition]) -> None:
        """Seek the partitions `starts` names; if it fails, they start where they would."""
        try:
            offsets = await starts(partitions)
        except (KafkaError, OSError) as error:
            self.log.warning(
                "%s: start offsets not read (%r); the partitions start at the group's",
                self.spec.flow,
                error,
            )
            return
        for tp, offset in sorted(offsets.items()):
            self.log.info(
                "%s: %s/%d starts at offset %d", self.spec.flow, tp.topic, tp.partition, offset
            )
            self.source.consumer.seek(tp, offset)

    # -- timers ------------------------------------------------------------------------------

    async def _every(self, timer: Timer) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timer.seconds)
            if self._stopping.is_set():
                return
            try:
                await timer.action()
            except SinkStopping as error:
                self.log.warning("%s: %s: %s", self.spec.flow, timer.name, error)
            except Exception:
                self.log.exception(
                    "%s: %s failed; runs again in %.1f s", self.spec.flow, timer.name, timer.seconds
                )
