"""A lane: a plain aiokafka consumer (its own group, run as a service of the worker) handing
each message to a handler with bounded concurrency, so a lane that waits never holds up
another lane's fetches. The execution lanes hand decided requests to the executor; the held
lane keeps low and background requests back from decide: it releases them when the off-peak
window (if any) is open, under a rate cap shared by all workers, except requests whose deadline
is near, which go at once.

Messages finish out of order; the committed offset is always the lowest one not finished, so a
crash re-reads what was in flight or held (and a Redis mark skips what already executed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from mode import Service

from agents.router.decide import Emit, count_response
from agents.router.execute import Executor, Outcome
from agents.router.keys import TokenBuckets, Wait
from agents.router.lanes import DeferredQueue, OffPeak, OffsetTracker
from runtime import tracing
from runtime.lag import ConsumerGroups
from runtime.metrics import LANE_HELD, LANE_IN_FLIGHT, PROMOTIONS
from schemas import DecodeError, encode
from schemas.events import AIResponse, ResponseStatus, RoutedRequest, RouterSettlement
from sinks.redis import RETRYABLE as REDIS_DOWN
from sinks.retry import until_written
from topics.catalog import AI_RESPONSES, AI_ROUTER_SETTLEMENTS, USAGE_EVENTS, TopicSpec
from topics.dlq import Origin

log = logging.getLogger(__name__)
T = TypeVar("T")

COMMIT_EVERY_S = 0.5
POLL_MS = 100
MAX_POLL_RECORDS = 500
# At stop, calls in flight get this long to finish; the rest are cancelled and left uncommitted,
# to run again after the restart. A held provider call (a timeout, a long Retry-After) must not
# hold the worker's stop past its 10 s.
STOP_GRACE_S = 3.0

Publish = Callable[[list[Emit]], Awaitable[None]]
DeadLetter = Callable[[Origin, str, str], Awaitable[None]]


@dataclass(frozen=True)
class DeferredPlan:
    """How the deferred lane releases what it holds."""

    rate_gate: TokenBuckets
    offpeak: OffPeak | None
    promote_before: timedelta
    max_held: int


@dataclass(frozen=True)
class Job(Generic[T]):
    partition: TopicPartition
    offset: int
    key: bytes | None
    value: bytes
    payload: T
    headers: tuple[tuple[str, bytes], ...] = ()  # the message's; its trace context among them

    @property
    def origin(self) -> Origin:
        return Origin(
            self.partition.topic, self.partition.partition, self.offset, self.key, self.value
        )


class DoneMarks:
    """Request ids whose outcome was published, for the window: a lane message read again after
    a crash or a rebalance is not executed twice."""

    def __init__(self, client: aioredis.Redis, window_s: int) -> None:
        self.client = client
        self.window_s = max(1, window_s)

    async def done(self, request_id: str) -> bool:
        return bool(await self.client.exists(f"router:done:{request_id}"))

    async def mark(self, request_id: str) -> None:
        await self.client.set(f"router:done:{request_id}", b"1", ex=self.window_s)


def outcome_messages(outcome: Outcome) -> list[Emit]:
    user = outcome.response.user_id.encode()
    messages = [Emit(AI_RESPONSES, user, encode(outcome.response))]
    if outcome.usage is not None:
        messages.append(Emit(USAGE_EVENTS, user, encode(outcome.usage)))
    messages.append(Emit(AI_ROUTER_SETTLEMENTS, user, encode(outcome.settlement)))
    return messages


def internal_failure(routed: RoutedRequest, error: BaseException) -> Outcome:
    """An answer for a request the executor could not handle (a bug, Redis down): the user
    gets a failed response and any free slot goes back."""
    request = routed.request
    response = AIResponse(
        request_id=request.request_id,
        user_id=request.user_id,
        status=ResponseStatus.FAILED,
        completed_at=datetime.now(UTC),
        error=f"internal error while executing: {type(error).__name__}: {error}"[:500],
        rationale=routed.rationale,
    )
    settlement = RouterSettlement(
        request_id=request.request_id,
        user_id=request.user_id,
        response=response,
        estimated_cost_usd=routed.estimated_cost_usd,
        actual_cost_usd=Decimal(0),
        released_free_slot_day=routed.free_slot_day,
    )
    return Outcome(response, None, settlement)


class ExecuteRouted:
    """The execution lanes' handler: run a decided request, publish its response, usage and
    settlement, and mark it done."""

    def __init__(
        self, executor: Executor, publish: Publish, dead_letter: DeadLetter, marks: DoneMarks
    ) -> None:
        self.executor = executor
        self.publish = publish
        self.dead_letter = dead_letter
        self.marks = marks

    async def __call__(self, job: Job[RoutedRequest]) -> None:
        request_id = job.payload.request.request_id
        attributes = {
            "scribe.request_id": request_id,
            "messaging.destination.name": job.partition.topic,
        }
        with tracing.consuming("router.execute", job.headers, attributes):
            await self._execute(job, request_id)

    async def _execute(self, job: Job[RoutedRequest], request_id: str) -> None:
        # While Redis is down the call waits for it (its lane slot held, so the lane slows to
        # a stop), rather than run a request that may have been answered already.
        if await until_written(
            "redis.router_done", self.marks.done, request_id, retryable=REDIS_DOWN
        ):
            log.info("router: %s already answered; not executed again", request_id)
            return
        try:
            outcome = await self.executor.run(job.payload)
        except Exception as error:  # a bug or a lost dependency: answer, dead-letter, go on
            log.exception("router: executing %s failed", request_id)
            outcome = internal_failure(job.payload, error)
            await self.dead_letter(job.origin, "execute", str(outcome.response.error))
        await self.publish(outcome_messages(outcome))
        count_response(outcome.response)
        try:
            await self.marks.mark(request_id)
        except REDIS_DOWN as error:
            # Answered and published: only a re-read after a crash could run it again.
            log.warning(
                "router: %s answered, but its done mark was not stored: %s", request_id, error
            )


class LaneConsumer(Service, Generic[T]):
    def __init__(
        self,
        name: str,
        spec: TopicSpec,
        new_consumer: Callable[[], AIOKafkaConsumer],
        *,
        group: str,
        groups: ConsumerGroups,
        read: Callable[[bytes], T],
        deadline_of: Callable[[T], datetime | None],
        handle: Callable[[Job[T]], Awaitable[None]],
        dead_letter: DeadLetter,
        concurrency: int,
        deferred: DeferredPlan | None = None,
        stop_together: list[Any] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.spec = spec
        self.new_consumer = new_consumer
        self.group = group
        self.groups = groups
        self.read = read
        self.deadline_of = deadline_of
        self.handle = handle
        self.dead_letter = dead_letter
        self.concurrency = max(1, concurrency)
        self.deferred = deferred
        self.queue: DeferredQueue[Job[T]] = DeferredQueue()
        self.tracker = OffsetTracker()
        self.in_flight = 0
        self._slot_freed = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        if stop_together is not None:
            stop_together.append(self)

    @property
    def label(self) -> str:
        return f"Lane[{self.name}]"

    @Service.task
    async def _consume(self) -> None:
        consumer = self.new_consumer()
        consumer.subscribe([self.spec.name], listener=_Rebalance(self, consumer))
        await consumer.start()
        self.groups.add(self.group, [self.spec.name], consumer)
        log.info("router: %s lane consuming %s", self.name, self.spec.name)
        next_commit = time.monotonic() + COMMIT_EVERY_S
        try:
            while not self.should_stop:
                self._apply_backpressure(consumer)
                batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_POLL_RECORDS)
                for partition, records in batches.items():
                    for record in records:
                        await self._receive(partition, record)
                await self._release_deferred()
                if time.monotonic() >= next_commit:
                    await self._commit(consumer)
                    next_commit = time.monotonic() + COMMIT_EVERY_S
        finally:
            self.groups.discard(self.group)
            await self._finish_or_abandon(STOP_GRACE_S)
            await self._commit(consumer)
            await consumer.stop()

    async def _finish_or_abandon(self, grace_s: float) -> None:
        if not self._running:
            return
        _, pending = await asyncio.wait(self._running, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
            log.info(
                "router: %s lane left %d call(s) unfinished at stop; they run again after the "
                "restart",
                self.name,
                len(pending),
            )

    async def _receive(self, partition: TopicPartition, record: Any) -> None:
        self.tracker.received(partition, record.offset)
        try:
            if record.value is None:
                raise DecodeError("json", "empty message (no value)")
            payload = self.read(record.value)
        except DecodeError as error:
            origin = Origin(
                partition.topic, partition.partition, record.offset, record.key, record.value
            )
            await self.dead_letter(origin, error.kind, f"unreadable lane message: {error.reason}")
            self.tracker.finished(partition, record.offset)
            return
        job = Job(
            partition, record.offset, record.key, record.value, payload, tuple(record.headers or ())
        )
        if self.deferred is None:
            await self._wait_for_slot()
            self._start(job)
        else:
            self.queue.add(job, self.deadline_of(payload))
            LANE_HELD.labels(lane=self.name).set(len(self.queue))

    async def _release_deferred(self) -> None:
        plan = self.deferred
        if plan is None:
            return
        now = datetime.now(UTC)
        for job in self.queue.promoted(now, plan.promote_before):
            PROMOTIONS.inc()
            self._start(job)
        if plan.offpeak is None or plan.offpeak.contains(now):
            while len(self.queue) and self.in_flight < self.concurrency:
                try:
                    gate = await plan.rate_gate.acquire()
                except REDIS_DOWN as error:
                    log.warning(
                        "router: %s lane holds its queue while Redis is down: %s", self.name, error
                    )
                    break
                if isinstance(gate, Wait):
                    break
                for job in self.queue.in_order(1):
                    self._start(job)
        LANE_HELD.labels(lane=self.name).set(len(self.queue))

    async def _wait_for_slot(self) -> None:
        while self.in_flight >= self.concurrency:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    def _start(self, job: Job[T]) -> None:
        self.in_flight += 1
        LANE_IN_FLIGHT.labels(lane=self.name).set(self.in_flight)
        task = asyncio.create_task(self._run(job))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, job: Job[T]) -> None:
        abandoned = False
        try:
            await self.handle(job)
        except asyncio.CancelledError:
            abandoned = True  # at stop: its offset stays uncommitted, so it runs again
            raise
        except Exception:
            # Not answered (a server stayed down until the stop, or a bug): never committed
            # past, so a restart reads it again; the done marks skip what was answered.
            abandoned = True
            log.exception(
                "router: %s lane: %s/%d not finished; left uncommitted until a restart",
                self.name,
                job.partition.topic,
                job.offset,
            )
        finally:
            if not abandoned:
                self.tracker.finished(job.partition, job.offset)
            self.in_flight -= 1
            LANE_IN_FLIGHT.labels(lane=self.name).set(self.in_flight)
            self._slot_freed.set()

    def _apply_backpressure(self, consumer: AIOKafkaConsumer) -> None:
        if self.deferred is None:
            return
        assigned = consumer.assignment()
        if len(self.queue) >= self.deferred.max_held:
            consumer.pause(*assigned)
        elif consumer.paused():
            consumer.resume(*assigned)

    async def _commit(
        self, consumer: AIOKafkaConsumer, only: set[TopicPartition] | None = None
    ) -> None:
        assigned = consumer.assignment()
        offsets = {
            tp: offset
            for tp, offset in self.tracker.committable().items()
            if isinstance(tp, TopicPartition) and tp in assigned and (only is None or tp in only)
        }
        if offsets:
            await consumer.commit(offsets)

    async def on_revoked(self, consumer: AIOKafkaConsumer, revoked: set[TopicPartition]) -> None:
        """Commit what finished, then forget held requests of the partitions going away: their
        new owner reads them again from the committed offset."""
        await self._commit(consumer, only=revoked)
        self.queue.drop(lambda job: job.partition not in revoked)
        for tp in revoked:
            self.tracker.forget(tp)
        if self.deferred is not None:
            LANE_HELD.labels(lane=self.name).set(len(self.queue))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, lane: LaneConsumer[Any], consumer: AIOKafkaConsumer) -> None:
        self.lane = lane
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.lane.on_revoked(self.consumer, set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info(
            "router: %s lane assigned partitions %s",
            self.lane.name,
            sorted(tp.partition for tp in assigned),
        )
