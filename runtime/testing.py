"""Run a flow in-process, in a unit test: records from a list, the sinks of the test's
choosing (`ListSink`), dead letters into a list, offsets committed into a dict. The loop,
the decoding, the checkpoint order and the shutdown are the ones a worker runs; only the
consumer is a list."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiokafka import TopicPartition

from runtime.concurrent import ConcurrentRunner, RecordFlow
from runtime.flow import Flow, FlowRunner
from runtime.source import Record

T = TypeVar("T")

RUN_TIMEOUT_S = 30.0


class ListSink(Generic[T]):
    """Keeps every batch written to it; `close` is recorded so a test sees the order."""

    def __init__(self, batches: list[T] | None = None) -> None:
        self.batches: list[T] = [] if batches is None else batches
        self.closed = False

    async def write(self, batch: T) -> None:
        if self.closed:
            raise RuntimeError("write on a closed sink")
        self.batches.append(batch)

    async def close(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class DeadLetter:
    record: Record
    kind: str
    reason: str


@dataclass
class DeadLetterList:
    """A dead-letter writer that keeps what it is given, in order."""

    letters: list[DeadLetter] = field(default_factory=list)

    async def __call__(self, record: Record, kind: str, reason: str) -> None:
        self.letters.append(DeadLetter(record, kind, reason))


@dataclass
class _Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class ListConsumer:
    """A consumer of records given up front. It owns every partition they name, hands them
    out in offset order per partition, and keeps what is committed. `refuse_commits` makes
    the broker refuse commits, as a rebalance does."""

    def __init__(
        self, records: Iterable[Record], partition_counts: Mapping[str, int] | None = None
    ):
        self.queues: dict[TopicPartition, list[_Message]] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            queue = self.queues.setdefault(tp, [])
            offset = queue[-1].offset + 1 if queue else r.offset
            queue.append(
                _Message(r.topic, r.partition, max(offset, r.offset), r.key, r.value, r.headers)
            )
        # Every record ever given, per partition: a rebalance reads again from the commit.
        self.logs = {tp: list(queue) for tp, queue in self.queues.items()}
        self.counts = dict(partition_counts or {})
        self.committed: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self._paused: set[TopicPartition] = set()
        self.refuse_commits = False
        self.listener: Any = None
        self.topics: list[str] = []
        self.stopped = False

    def subscribe(self, topics: Iterable[str], listener: Any) -> None:
        self.topics = list(topics)
        self.listener = listener

    async def start(self) -> None:
        for topic in self.topics:
            for p in range(self.counts.get(topic, 0)):
                self.queues.setdefault(TopicPartition(topic, p), [])
        if self.listener is not None:  # else partitions are assigned, not given by a group
            await self.listener.on_partitions_assigned(set(self.queues))

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read only `partitions` (a reader without a group)."""
        wanted = set(partitions)
        self.queues = {tp: self.queues.get(tp, []) for tp in wanted}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.queues[partition] = [m for m in self.logs.get(partition, []) if m.offset >= offset]

    async def seek_to_beginning(self) -> None:
        for tp in self.queues:
            self.queues[tp] = list(self.logs.get(tp, []))

    async def stop(self) -> None:
        self.stopped = True

    @property
    def drained(self) -> bool:
        return all(not queue for queue in self.queues.values())

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        taken: dict[Any, list[Any]] = {}
        for tp, queue in self.queues.items():
            if tp in self._paused or not queue or max_records <= 0:
                continue
            taken[tp], self.queues[tp] = queue[:max_records], queue[max_records:]
            max_records -= len(taken[tp])
        if not taken:
            await asyncio.sleep(min(timeout_ms, 5) / 1000)
        return taken

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        from aiokafka.errors import CommitFailedError

        if self.refuse_commits:
            raise CommitFailedError("refused: the group is rebalancing")
        self.commits.append(dict(offsets))
        self.committed.update(offsets)

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)

    def paused(self) -> set[TopicPartition]:
        """As aiokafka's consumer: the partitions paused now."""
        return set(self._paused)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    def assignment(self) -> set[TopicPartition]:
        return set(self.queues)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        count = self.counts.get(topic) or len({tp for tp in self.queues if tp.topic == topic})
        return set(range(count)) if count else None

    def append(self, more: Iterable[Record]) -> None:
        """Records produced after the start, at the end of their partitions."""
        for r in more:
            tp = TopicPartition(r.topic, r.partition)
            log = self.logs.setdefault(tp, [])
            message = _Message(
                r.topic, r.partition, log[-1].offset + 1 if log else 0, r.key, r.value, r.headers
            )
            log.append(message)
            self.queues.setdefault(tp, []).append(message)

    async def rebalance(self) -> None:
        """What an eager rebalance does to a member that keeps its partitions: revoke them
        all, give them back, and read each again from its committed offset."""
        owned = set(self.queues)
        await self.listener.on_partitions_revoked(owned)
        for tp in owned:
            start = self.committed.get(tp, 0)
            self.queues[tp] = [m for m in self.logs.get(tp, []) if m.offset >= start]
        await self.listener.on_partitions_assigned(owned)

    async def revoke(self, partitions: Sequence[TopicPartition]) -> None:
        """What a rebalance does to this member: revoke, then assign what is left."""
        await self.listener.on_partitions_revoked(set(partitions))
        for tp in partitions:
            self.queues.pop(tp, None)
        await self.listener.on_partitions_assigned(set(self.queues))


def records(
    topic: str, values: Sequence[bytes | None], partition: int = 0, key: bytes | None = None
) -> list[Record]:
    """Records of one partition, offsets from 0."""
    return [Record(topic, partition, offset, key, value) for offset, value in enumerate(values)]


async def run_flow(
    flow: Flow[Any, Any],
    consumer: ListConsumer,
    timeout: float = RUN_TIMEOUT_S,
) -> FlowRunner[Any, Any]:
    """Run `flow` until every record was read and written, then stop it as a worker does.
    Returns the stopped runner; the commits are on `consumer`."""
    runner: FlowRunner[Any, Any] = FlowRunner(flow, consumer)
    await runner.start()
    running = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(timeout):
            while not (consumer.drained and runner.idle) and not running.done():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    finally:
        await runner.stop()
        await running
    return runner


class Started:
    """A per-record flow running in-process on a list consumer, as a worker runs it: `start`,
    then `stop` (bounded, ordered); `crashed` says whether its loop ended with an error."""

    def __init__(self, flow: RecordFlow[Any], consumer: ListConsumer) -> None:
        self.consumer = consumer
        self.runner: ConcurrentRunner[Any] = ConcurrentRunner(flow, consumer)
        self._running: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.runner.start()
        self._running = asyncio.create_task(self.runner.run())

    @property
    def crashed(self) -> bool:
        task = self._running
        return task is not None and task.done() and task.exception() is not None

    async def settled(self, timeout: float = RUN_TIMEOUT_S) -> None:
        """Every record was read and none is waiting, held back or in flight."""
        async with asyncio.timeout(timeout):
            while not (self.consumer.drained and self.runner.idle):
                if self._running is not None and self._running.done():
                    return
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        await self.runner.stop()
        if self._running is not None:
            await self._running  # its error, if it ended with one


async def run_records(
    flow: RecordFlow[Any], consumer: ListConsumer, timeout: float = RUN_TIMEOUT_S
) -> ConcurrentRunner[Any]:
    """Run the per-record `flow` until every record was read and finished (TimeoutError after
    `timeout` if one stays held back), then stop it as a worker does. The commits are on
    `consumer`."""
    started = Started(flow, consumer)
    await started.start()
    try:
        await started.settled(timeout)
    finally:
        await started.stop()
    return started.runner
