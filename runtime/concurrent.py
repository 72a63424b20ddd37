"""A per-record flow: each valid record is handed to `handle` on its own, up to `concurrency` at
a time, and records finish out of order (a provider call that waits does not hold up the ones
behind it). It reads through the one batch source (subscribe, rebalance, decode, dead letters,
pause), so only the middle differs from `FlowRunner`:

    poll -> decode (dead letters) -> [held back by `holding`] -> handle, concurrently -> commit

The committed offset of a partition is always the lowest one not finished, so a crash reads
again what was in flight or held back; a handler that raises leaves its record unfinished until
a restart. Stopping is bounded: reading stops, calls in flight get `stop_grace_seconds`, the
rest are cancelled (left uncommitted), what finished is committed, the consumer leaves its
group, then the closers run.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from runtime.flow import bounded_step
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

RETRY_PAUSE_S = 0.5


class OffsetTracker:
    """Per partition: the offsets received and not yet finished. The committable offset is the
    lowest unfinished one (or where reading got to), so a commit never skips a record still in
    flight or held back."""

    def __init__(self) -> None:
        self._open: dict[Hashable, list[int]] = {}
        self._done: dict[Hashable, set[int]] = {}
        self._next: dict[Hashable, int] = {}

    def received(self, partition: Hashable, offset: int) -> None:
        heapq.heappush(self._open.setdefault(partition, []), offset)
        self.read_to(partition, offset + 1)

    def read_to(self, partition: Hashable, next_offset: int) -> None:
        """Everything before `next_offset` was read (records not `received` need no work: a
        dead letter already stored)."""
        self._open.setdefault(partition, [])
        self._next[partition] = max(self._next.get(partition, 0), next_offset)

    def finished(self, partition: Hashable, offset: int) -> None:
        if partition in self._open:  # else the partition was revoked meanwhile
            self._done.setdefault(partition, set()).add(offset)

    def committable(self) -> dict[Hashable, int]:
        result = {}
        for partition, pending in self._open.items():
            done = self._done.get(partition, set())
            while pending and pending[0] in done:
                done.discard(heapq.heappop(pending))
            result[partition] = pending[0] if pending else self._next[partition]
        return result

    def forget(self, partition: Hashable) -> None:
        self._open.pop(partition, None)
        self._done.pop(partition, None)
        self._next.pop(partition, None)


class Holding(Protocol[E]):
    """Records a flow keeps back once read and starts later (a rate cap, a time window). What
    it holds is uncommitted; when full, the flow's partitions are paused."""

    def __len__(self) -> int: ...

    @property
    def full(self) -> bool: ...

    def hold(self, received: Received[E]) -> None: ...

    async def due(self, room: int) -> list[Received[E]]:
        """What starts now: those that cannot wait (however many), then at most `room` more."""
        ...

    def drop(self, partitions: frozenset[TopicPartition]) -> None:
        """Forget what is held from `partitions` (revoked: their next owner reads it again)."""
        ...


class Ownership(Protocol):
    """Told which partitions the flow's consumer owns, for work started on their records
    before the flow reads them (`agents.router.express`)."""

    def assigned(self, partitions: frozenset[TopicPartition], counts: Mapping[str, int]) -> None:
        """`counts`: each of the partitions' topics' partition count."""

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Returns once the partitions' work is finished (or given up): they move next."""


@dataclass(frozen=True)
class RecordFlow(Generic[E]):
    spec: ConsumerSpec
    decode: Callable[[Record], E | Rejected]
    dead_letter: DeadLetterWriter
    handle: Callable[[Received[E]], Awaitable[None]]
    concurrency: int
    # None: every record starts as soon as a slot is free.
    holding: Holding[E] | None = None
    # At stop, calls in flight get this long to finish; the rest are cancelled and left
    # uncommitted, to run again after the restart.
    stop_grace_seconds: float = 3.0
    commit_seconds: float = 0.5
    # Errors of a poll that are retried after a pause rather than ending the flow.
    retryable: tuple[type[BaseException], ...] = (KafkaError, OSError)
    # Told the number of calls in flight whenever it changes (a gauge).
    in_flight_changed: Callable[[int], None] = lambda _: None
    # Released once the consumer left its group.
    closers: Sequence[Callable[[], Awaitable[None]]] = field(default_factory=tuple)
    ownership: Ownership | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"flow {self.spec.flow!r}: concurrency must be at least 1")


class ConcurrentRunner(Generic[E]):
    """Runs one per-record flow on one consumer: `start`, then `run` (returns once stopped),
    `stop`."""

    def __init__(self, flow: RecordFlow[E], consumer: Consumer) -> None:
        self.flow = flow
        self.spec = flow.spec
        self.log = logging.LoggerAdapter(log, {"flow": flow.spec.flow})
        self.source: BatchSource[E] = BatchSource(
            flow.spec, consumer, flow.decode, flow.dead_letter
        )
        self.tracker = OffsetTracker()
        self.in_flight = 0
        self._slot_freed = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._committed: dict[TopicPartition, int] = {}
        # One commit at a time, each computing its offsets once the one before is done, so
        # a later commit never goes out before an earlier one; the read loop's runs behind it.
        self._commit_lock = asyncio.Lock()
        self._committing: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._stop: asyncio.Future[None] | None = None
        self._reading: asyncio.Task[None] | None = None
        self._abandoned = False  # stopping cancelled the loop itself
        # The group has given this member its partitions and no rebalance is under way.
        self.assigned = False

    @property
    def held(self) -> int:
        return len(self.flow.holding) if self.flow.holding is not None else 0

    @property
    def paused(self) -> bool:
        return self.source.paused

    @property
    def idle(self) -> bool:
        """Nothing read is waiting to start, held back or in flight."""
        return self._in_hand == 0 and self.in_flight == 0 and self.held == 0

    _in_hand = 0  # records of the last poll not yet started or held

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.source.start(self)

    async def run(self) -> None:
        """Read and start records until `stop`; a failure that is not retryable ends the flow
        with that error (after the bounded shutdown)."""
        self._reading = asyncio.current_task()
        try:
            await self._read()
        except asyncio.CancelledError:
            if not self._abandoned:
                raise
        finally:
            self._reading = None

    async def stop(self) -> None:
        """Stop in order; safe to call more than once (a second call returns when the first
        stop is done)."""
        if self._stop is None:
            self._stopping.set()
            self._slot_freed.set()  # a read waiting for a slot stops waiting
            self._stop = asyncio.ensure_future(self._stop_in_order())
        await asyncio.shield(self._stop)

    async def _stop_in_order(self) -> None:
        deadline = self.spec.stop_seconds
        reading = self._reading
        if reading is not None:
            await asyncio.wait([reading], timeout=deadline)
            if not reading.done():
                self._abandoned = True
                reading.cancel()
                await asyncio.wait([reading], timeout=deadline)
        await self._finish_or_abandon(self.flow.stop_grace_seconds)
        await self._bounded("committing what finished", self._last_commit(), deadline)
        await self._bounded("leaving the group", self.source.consumer.stop(), deadline)
        for close in self.flow.closers:
            await self._bounded("closing", close(), deadline)

    async def _finish_or_abandon(self, grace: float) -> None:
        if not self._running:
            return
        _, pending = await asyncio.wait(set(self._running), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
            self.log.info(
                "%s: %d record(s) unfinished at stop, left uncommitted; they run again after "
                "the restart",
                self.spec.flow,
                len(pending),
            )

    async def _bounded(self, what: str, step: Awaitable[None], seconds: float) -> None:
        await bounded_step(self.log, self.spec.flow, what, step, seconds)

    # -- the loop ----------------------------------------------------------------------------

    async def _read(self) -> None:
        next_commit = time.monotonic() + self.flow.commit_seconds
        while not self._stopping.is_set():
            if self._committing is not None and self._committing.done():
                committed, self._committing = self._committing, None
                committed.result()  # an error ends the flow, as it did in line
            self._apply_backpressure()
            batch: Batch[E] = Batch()
            try:
                await self.source.fill(batch, self.spec.poll_ms)
            except self.flow.retryable as error:
                self.log.warning("%s: poll failed (%r); retrying", self.spec.flow, error)
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            # Tracked before any await: a commit never passes a record read but not started.
            for received in batch.received:
                self.tracker.received(_tp(received.origin), received.origin.offset)
            for tp, next_offset in batch.offsets.items():
                self.tracker.read_to(tp, next_offset)
            self._in_hand = len(batch.received)
            for received in batch.received:
                await self._dispatch(received, batch.epochs[_tp(received.origin)])
                self._in_hand -= 1
            self._in_hand = 0
            await self._release_held()
            if time.monotonic() >= next_commit:
                # Behind the reading: a commit is a round trip to the group coordinator (6 ms
                # on one Apache Kafka broker), and records that arrive meanwhile start at once.
                if self._committing is None:
                    self._committing = asyncio.create_task(
                        self._commit(), name=f"{self.spec.flow}.commit"
                    )
                next_commit = time.monotonic() + self.flow.commit_seconds

    def _owned_since(self, tp: TopicPartition, epoch: int) -> bool:
        """Still this member's, and not given back since (then its records come again)."""
        return self.source.owned.get(tp) == epoch

    async def _dispatch(self, received: Received[E], epoch: int) -> None:
        tp = _tp(received.origin)
        if self.flow.holding is not None:
            if self._owned_since(tp, epoch):
                self.flow.holding.hold(received)
            return
        while self.in_flight >= self.flow.concurrency and not self._stopping.is_set():
            self._slot_freed.clear()
            await self._slot_freed.wait()
        if self._stopping.is_set() or not self._owned_since(tp, epoch):
            return  # left unfinished: read again after the restart, or by the new owner
        self._start(received, epoch)

    async def _release_held(self) -> None:
        holding = self.flow.holding
        if holding is None or self._stopping.is_set():
            return
        for received in await holding.due(max(0, self.flow.concurrency - self.in_flight)):
            tp = _tp(received.origin)
            self._start(received, self.source.owned.get(tp, -1))

    def _start(self, received: Received[E], epoch: int) -> None:
        self.in_flight += 1
        self.flow.in_flight_changed(self.in_flight)
        task = asyncio.create_task(self._run(received, epoch), name=f"{self.spec.flow}.record")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, received: Received[E], epoch: int) -> None:
        finished = False
        try:
            await self.flow.handle(received)
            finished = True
        except Exception:  # (cancelled at stop: also left uncommitted, and it runs again)
            # Not finished (a server stayed down until the stop, or a bug): never committed
            # past, so a restart reads it again.
            self.log.exception(
                "%s: %s/%d/%d not finished; left uncommitted until a restart",
                self.spec.flow,
                received.origin.topic,
                received.origin.partition,
                received.origin.offset,
            )
        finally:
            tp = _tp(received.origin)
            if finished and self._owned_since(tp, epoch):
                self.tracker.finished(tp, received.origin.offset)
            self.in_flight -= 1
            self.flow.in_flight_changed(self.in_flight)
            self._slot_freed.set()

    def _apply_backpressure(self) -> None:
        holding = self.flow.holding
        if holding is None:
            return
        if holding.full:
            self.source.pause()
        elif self.source.paused:
            self.source.resume()

    async def _last_commit(self) -> None:
        """The stop's commit, once the commit still running behind the reads is done; that
        one's failure is raised here (the stop logs it) rather than lost with its task."""
        behind, self._committing = self._committing, None
        try:
            if behind is not None:
                await behind
        finally:
            await self._commit()

    async def _commit(self, only: frozenset[TopicPartition] | None = None) -> None:
        async with self._commit_lock:
            offsets = {
                tp: offset
                for tp, offset in self.tracker.committable().items()
                if isinstance(tp, TopicPartition)
                and tp in self.source.owned
                and (only is None or tp in only)
                and self._committed.get(tp) != offset
            }
            if offsets and await self.source.commit(offsets):
                self._committed.update(offsets)

    # -- rebalance (called by the source's listener) -----------------------------------------

    async def partitions_revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Commit what finished, then forget what is held or tracked for the partitions going
        away: their new owner reads it again from the committed offset."""
        self.assigned = False
        if self.flow.ownership is not None:
            # Before the commit: what it finishes is then committed too.
            await self.flow.ownership.revoked(partitions)
        await self._commit(only=partitions)
        self.source.forget(partitions)
        if self.flow.holding is not None:
            self.flow.holding.drop(partitions)
        for tp in partitions:
            self.tracker.forget(tp)
            self._committed.pop(tp, None)

    async def partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        if self._stopping.is_set():
            return  # a join finishing while the worker leaves: it will own nothing
        self.assigned = True
        if self.flow.ownership is not None:
            consumer = self.source.consumer
            topics = {tp.topic for tp in partitions}
            counts = {t: len(consumer.partitions_for_topic(t) or ()) for t in topics}
            self.flow.ownership.assigned(partitions, counts)
        self.log.info(
            "%s: assigned partitions %s",
            self.spec.flow,
            ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(partitions)) or "none",
        )


def _tp(record: Record) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)
