"""The one batch source: records read from a consumer group, decoded into valid events or
dead letters (in offset order), gathered into batches, committed once the batch is written.

It also keeps what the group gave this member: a rebalance listener tells the flow, and the
records read before a revocation are dropped from the batches not yet written (their next owner
reads them again from the committed offset).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from runtime.metrics import ASSIGNED_PARTITIONS, MESSAGES_IN
from runtime.spec import ConsumerSpec

log = logging.getLogger(__name__)

DECODE_CHUNK = 250  # records decoded between two turns of the event loop (a few ms of CPU)

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed message: where it came from and its original bytes (what a dead letter
    keeps)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # The record's Kafka headers; a trace's `traceparent` travels in them (runtime.tracing).
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Rejected:
    """What a flow's decode returns for bad input: the dead letter's kind and reason."""

    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class Received(Generic[E]):
    """A valid event with where it came from, so a later stage can still dead-letter it."""

    event: E
    origin: Record


Decode = Callable[[Record], "E | Rejected"]


class DeadLetterWriter(Protocol):
    """Stores `record` in its topic's dead-letter topic with the reason; returns once stored,
    so an offset is never committed before its dead letter."""

    async def __call__(self, record: Record, kind: str, reason: str) -> None: ...


class Consumer(Protocol):
    """What the runtime uses of a consumer: aiokafka's, or the in-process one of tests."""

    def subscribe(self, topics: Iterable[str], listener: Any) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def getmany(self, *, timeout_ms: int, max_records: int) -> Mapping[Any, list[Any]]: ...
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def assignment(self) -> set[TopicPartition]: ...
    def partitions_for_topic(self, topic: str) -> set[int] | None: ...
    def assign(self, partitions: Iterable[TopicPartition]) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    async def seek_to_beginning(self) -> None: ...


@dataclass
class Batch(Generic[E]):
    """Valid events in offset order per partition, and the offsets to commit once they are
    written (dead-lettered records included)."""

    received: list[Received[E]] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    # The ownership epoch each partition's records were read in (see `BatchSource`).
    epochs: dict[TopicPartition, int] = field(default_factory=dict)
    # Records read per partition, dead-lettered ones included.
    counts: dict[TopicPartition, int] = field(default_factory=dict)
    records: int = 0
    opened_at: float | None = None

    def without(self, partitions: set[TopicPartition]) -> Batch[E]:
        if not partitions & self.offsets.keys():
            return self
        kept = [r for r in self.received if _tp(r.origin) not in partitions]
        offsets = {tp: o for tp, o in self.offsets.items() if tp not in partitions}
        epochs = {tp: e for tp, e in self.epochs.items() if tp not in partitions}
        counts = {tp: n for tp, n in self.counts.items() if tp not in partitions}
        return Batch(kept, offsets, epochs, counts, sum(counts.values()), self.opened_at)

    def drop(self, partition: TopicPartition) -> None:
        """Forget what was read from `partition`, in place (a poll may be filling this batch)."""
        self.received[:] = [r for r in self.received if _tp(r.origin) != partition]
        self.offsets.pop(partition, None)
        self.epochs.pop(partition, None)
        self.records -= self.counts.pop(partition, 0)


def _tp(record: Record) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


class Ownership(Protocol):
    """Called by the source's rebalance listener; `partitions_revoked` calls `forget`."""

    async def partitions_revoked(self, partitions: frozenset[TopicPartition]) -> None: ...
    async def partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None: ...


def count_assignment(spec: ConsumerSpec, assigned: Iterable[TopicPartition]) -> None:
    """How many partitions of each of its topics the flow holds in this worker: how evenly a
    group of workers shares the load shows on every worker's /metrics."""
    held = {topic: 0 for topic in spec.topics}
    for tp in assigned:
        if tp.topic in held:
            held[tp.topic] += 1
    for topic, count in held.items():
        ASSIGNED_PARTITIONS.labels(flow=spec.flow, topic=topic).set(count)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: BatchSource[Any], ownership: Ownership) -> None:
        self.source = source
        self.ownership = ownership

    async def on_partitions_revoked(self, revoked: Any) -> None:
        partitions = frozenset(TopicPartition(tp.topic, tp.partition) for tp in revoked)
        await self.ownership.partitions_revoked(partitions)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        partitions = frozenset(TopicPartition(tp.topic, tp.partition) for tp in assigned)
        count_assignment(self.source.spec, partitions)
        self.source.own(partitions)
        await self.ownership.partitions_assigned(partitions)


class BatchSource(Generic[E]):
    """Reads `spec.topics` with `consumer` (built by `runtime.kafka`, not yet started)."""

    def __init__(
        self,
        spec: ConsumerSpec,
        consumer: Consumer,
        decode: Callable[[Record], E | Rejected],
        dead_letter: DeadLetterWriter,
    ) -> None:
        self.spec = spec
        self.log = logging.LoggerAdapter(log, {"flow": spec.flow})
        self.consumer = consumer
        self.decode = decode
        self.dead_letter = dead_letter
        # What the listener last gave this member (`assignment()` still lists revoked
        # partitions until the next assignment arrives), and the epoch each was given in: a
        # record read in an earlier epoch may already be another member's to write.
        self.owned: dict[TopicPartition, int] = {}
        self._epoch = 0
        self.paused = False

    async def start(self, ownership: Ownership) -> None:
        self.consumer.subscribe(list(self.spec.topics), listener=_Listener(self, ownership))
        await self.consumer.start()

    async def start_from_beginning(self, partitions: frozenset[TopicPartition]) -> None:
        """For a reader without a group (a compacted topic read as a table): `partitions`,
        all of them, from their first record; nothing is committed."""
        await self.consumer.start()
        self.consumer.assign(sorted(partitions))
        await self.consumer.seek_to_beginning()
        self.own(partitions)

    def own(self, partitions: frozenset[TopicPartition]) -> None:
        self._epoch += 1
        self.owned = {tp: self.owned.get(tp, self._epoch) for tp in partitions}
        if self.paused:
            self.consumer.pause(*partitions)  # a new assignment starts unpaused

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.owned.pop(tp, None)

    def still_owned(self, batch: Batch[E]) -> Batch[E]:
        """`batch` without the partitions revoked since it was read."""
        lost = {tp for tp, epoch in batch.epochs.items() if self.owned.get(tp, epoch + 1) > epoch}
        return batch.without(lost)

    def partition_counts(self) -> dict[str, int]:
        counts = {}
        for topic in self.spec.topics:
            partitions = self.consumer.partitions_for_topic(topic)
            if partitions:
                counts[topic] = len(partitions)
        return counts

    async def fill(
        self,
        batch: Batch[E],
        timeout_ms: int,
        until: asyncio.Future[Any] | None = None,
        most: int | None = None,
    ) -> int:
        """Add what one poll returns (at most what `batch` still has room for, and at most
        `most`) to `batch`; the invalid records are in the dead-letter topic on return. Returns
        how many it read. A poll still waiting for records when `until` is done returns with
        none."""
        room = self.spec.max_batch - batch.records
        if most is not None:
            room = min(room, most)
        if room <= 0:
            return 0
        read = 0
        fetched = await self._poll(timeout_ms, room, until)
        for tp, messages in fetched.items():
            if not messages:
                continue
            if batch.opened_at is None:
                batch.opened_at = time.monotonic()
            MESSAGES_IN.labels(topic=tp.topic, agent=self.spec.agent_of(tp.topic)).inc(
                len(messages)
            )
            key = TopicPartition(tp.topic, tp.partition)
            epoch = self.owned.get(key, self._epoch)
            if batch.epochs.setdefault(key, epoch) != epoch:
                # Read before the partition was revoked and given back to this member: its
                # position went back to the committed offset, so those records come again.
                # Kept, the whole partition would be dropped at write time, these new records
                # with it, and the next batch would commit past them.
                batch.drop(key)
                batch.epochs[key] = epoch
            for index, message in enumerate(messages, start=1):
                if index % DECODE_CHUNK == 0:
                    # Let the batch before this one make progress (its writes, its commit).
                    await asyncio.sleep(0)
                record = Record(
                    message.topic,
                    message.partition,
                    message.offset,
                    message.key,
                    message.value,
                    tuple(message.headers or ()),
                )
                outcome = self.decode(record)
                if isinstance(outcome, Rejected):
                    await self.dead_letter(record, outcome.kind, outcome.reason)
                else:
                    batch.received.append(Received(outcome, record))
            batch.offsets[key] = messages[-1].offset + 1
            batch.counts[key] = batch.counts.get(key, 0) + len(messages)
            batch.records += len(messages)
            read += len(messages)
        return read

    async def _poll(
        self, timeout_ms: int, room: int, until: asyncio.Future[Any] | None
    ) -> Mapping[Any, list[Any]]:
        if until is None or until.done():
            return await self.consumer.getmany(timeout_ms=timeout_ms, max_records=room)
        poll = asyncio.ensure_future(self.consumer.getmany(timeout_ms=timeout_ms, max_records=room))
        try:
            await asyncio.wait((poll, until), return_when=asyncio.FIRST_COMPLETED)
        finally:
            poll.cancel()  # a no-op once it returned: then its records are kept below
        try:
            return await poll
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            return {}  # cancelled while it waited: the consumer hands records out on return

    def pause(self) -> None:
        if not self.paused:
            self.log.warning("%s: partitions paused", self.spec.flow)
        self.consumer.pause(*self.consumer.assignment())
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.consumer.resume(*self.consumer.assignment())
            self.log.warning("%s: partitions resumed", self.spec.flow)
        self.paused = False

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> bool:
        """Commit; False when the broker refused (typically a rebalance took the partitions:
        their next owner reads the batch again, and the sinks recognise what they stored)."""
        if not offsets:
            return True
        try:
            await self.consumer.commit(dict(offsets))
        except KafkaError as error:
            self.log.warning(
                "%s: offsets not committed (%r); the batch will be re-read", self.spec.flow, error
            )
            return False
        return True
