"""The router's lanes, each a per-record flow on the runtime (`runtime.concurrent`): its own
consumer group (`<app_id>.router-<lane>`), records handled with bounded concurrency so a lane
that waits never holds up another lane's fetches, and the committed offset always the lowest
one not finished (a crash re-reads what was in flight or held; a Redis mark skips what already
executed). The execution lanes hand decided requests to the executor; the held lane keeps low
and background requests back from decide: it releases them when the off-peak window (if any)
is open, under a rate cap shared by all workers, except requests whose deadline is near, which
go at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Generic, TypeVar

import redis.asyncio as aioredis
from aiokafka import TopicPartition

from agents.router.decide import Emit, count_response
from agents.router.execute import Executor, Outcome
from agents.router.express import Express
from agents.router.keys import TokenBuckets, Wait
from agents.router.lanes import DeferredQueue, OffPeak
from runtime import tracing
from runtime.batched_calls import BatchedCalls
from runtime.concurrent import Holding, RecordFlow
from runtime.metrics import LANE_HELD, LANE_IN_FLIGHT, PROMOTIONS
from runtime.source import DeadLetterWriter, Received, Record, Rejected
from runtime.spec import ConsumerSpec
from schemas import DecodeError, encode
from schemas.events import (
    AIResponse,
    Refusal,
    RefusalKind,
    ResponseStatus,
    RoutedRequest,
    RouterSettlement,
)
from sinks.redis import RETRYABLE as REDIS_DOWN
from sinks.retry import until_written
from topics.catalog import AI_RESPONSES, AI_ROUTER_SETTLEMENTS, USAGE_EVENTS, TopicSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

# At stop, calls in flight get this long to finish; the rest are cancelled and left uncommitted,
# to run again after the restart. A held provider call (a timeout, a long Retry-After) must not
# hold the worker's stop past its 10 s.
STOP_GRACE_S = 3.0
# While Redis is down the held lane fails to get tokens on every poll: warned at most once per
# this long, and once more when Redis answers again.
REDIS_DOWN_WARNING_EVERY_S = 60.0

Publish = Callable[[list[Emit]], Awaitable[None]]


def lane_spec(lane: str, topic: TopicSpec, fetch_wait_ms: int = 500) -> ConsumerSpec:
    """What lane `lane` reads: `topic`, in the group `<app_id>.router-<lane>`."""
    return ConsumerSpec(
        f"router-{lane}",
        (topic.name,),
        max_batch=500,
        fetch_wait_ms=fetch_wait_ms,
        poll_ms=100,
        # Calls in flight get STOP_GRACE_S; each further step of the stop this long.
        stop_seconds=5.0,
        # Counted with the router's other inputs (the error-rate alert divides by agent).
        agent_labels={topic.name: "router"},
    )


@dataclass(frozen=True)
class DeferredPlan:
    """How the held lane releases what it holds."""

    rate_gate: TokenBuckets
    offpeak: OffPeak | None
    promote_before: timedelta
    max_held: int


class HeldRelease(Generic[T]):
    """The held lane's holding (`runtime.concurrent.Holding`): requests wait in arrival order;
    one whose deadline is within `promote_before` leaves at once, the rest leave in order while
    the off-peak window (if any) is open, as many as the shared rate cap allows. While Redis
    (behind the cap) is down, the queue is held, not lost."""

    def __init__(
        self,
        lane: str,
        plan: DeferredPlan,
        deadline_of: Callable[[T], datetime | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lane = lane
        self.plan = plan
        self.deadline_of = deadline_of
        self.clock = clock
        self.queue: DeferredQueue[Received[T]] = DeferredQueue()
        self._gauge = LANE_HELD.labels(lane=lane)
        self._warned_redis_down_at = -REDIS_DOWN_WARNING_EVERY_S  # clock time
        # From a warning that Redis is down until the line saying it answers again.
        self._outage_warned = False

    def __len__(self) -> int:
        return len(self.queue)

    @property
    def full(self) -> bool:
        return len(self.queue) >= self.plan.max_held

    def hold(self, received: Received[T]) -> None:
        self.queue.add(received, self.deadline_of(received.event))
        self._gauge.set(len(self.queue))

    async def due(self, room: int) -> list[Received[T]]:
        plan, now = self.plan, datetime.now(UTC)
        due = self.queue.promoted(now, plan.promote_before)
        PROMOTIONS.inc(len(due))
        # A token granted and not used is lost: never ask for more than the queue holds.
        asks = min(room, len(self.queue))
        if asks > 0 and (plan.offpeak is None or plan.offpeak.contains(now)):
            due.extend(self.queue.in_order(await self._tokens(asks)))
        self._gauge.set(len(self.queue))
        return due

    async def _tokens(self, asks: int) -> int:
        """How many of `asks` rate-gate tokens were granted (a `Wait` grants none). The asks
        go concurrently, so the gate sends them to Redis in one script, not one round trip
        each. A token granted before Redis failed is counted: it is gone from the bucket."""
        gates = await asyncio.gather(
            *(self.plan.rate_gate.acquire() for _ in range(asks)), return_exceptions=True
        )
        errors = [gate for gate in gates if isinstance(gate, BaseException)]
        for error in errors:
            if not isinstance(error, REDIS_DOWN):
                raise error
        if errors:
            self._note_redis_down(errors[0])
        elif self._outage_warned:
            self._outage_warned = False
            # At the warning's level: whoever sees that the queue is held sees it released.
            log.warning("router: %s lane releases its queue again: Redis answers", self.lane)
        return sum(1 for gate in gates if not isinstance(gate, Wait | BaseException))

    def _note_redis_down(self, error: BaseException) -> None:
        now = self.clock()
        if now - self._warned_redis_down_at >= REDIS_DOWN_WARNING_EVERY_S:
            self._warned_redis_down_at = now
            self._outage_warned = True
            log.warning("router: %s lane holds its queue while Redis is down: %s", self.lane, error)

    def drop(self, partitions: frozenset[TopicPartition]) -> None:
        self.queue.drop(
            lambda r: TopicPartition(r.origin.topic, r.origin.partition) not in partitions
        )
        self._gauge.set(len(self.queue))


class DoneMarks:
    """Request ids whose outcome was published, for the window: a lane message read again after
    a crash or a rebalance is not executed twice. The look-ups, and the marks, of concurrent
    calls go to Redis together, one pipeline per round trip."""

    def __init__(self, client: aioredis.Redis, window_s: int) -> None:
        self.client = client
        self.window_s = max(1, window_s)
        self._look_ups: BatchedCalls[str, bool] = BatchedCalls(self._done_many)
        self._marks: BatchedCalls[str, None] = BatchedCalls(self._mark_many)

    async def done(self, request_id: str) -> bool:
        return await self._look_ups(request_id)

    async def mark(self, request_id: str) -> None:
        await self._marks(request_id)

    async def _done_many(self, request_ids: list[str]) -> list[bool]:
        found = await self.client.mget([f"router:done:{r}" for r in request_ids])
        return [value is not None for value in found]

    async def _mark_many(self, request_ids: list[str]) -> list[None]:
        async with self.client.pipeline(transaction=False) as pipe:
            for request_id in request_ids:
                pipe.set(f"router:done:{request_id}", b"1", ex=self.window_s)
            await pipe.execute()
        return [None] * len(request_ids)


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
        refusal=Refusal(kind=RefusalKind.INTERNAL),
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
        self,
        executor: Executor,
        publish: Publish,
        dead_letter: DeadLetterWriter,
        marks: DoneMarks,
    ) -> None:
        self.executor = executor
        self.publish = publish
        self.dead_letter = dead_letter
        self.marks = marks

    async def __call__(self, job: Received[RoutedRequest]) -> None:
        await self._traced(job, look_up_done=True)

    async def decided_now(self, job: Received[RoutedRequest]) -> None:
        """Run a request whose decision was committed just now (`agents.router.express`):
        nothing can have run it before, so its done mark is not looked up."""
        await self._traced(job, look_up_done=False)

    async def _traced(self, job: Received[RoutedRequest], look_up_done: bool) -> None:
        request_id = job.event.request.request_id
        attributes = {
            "scribe.request_id": request_id,
            "messaging.destination.name": job.origin.topic,
        }
        with tracing.consuming("router.execute", job.origin.headers, attributes):
            await self._execute(job, request_id, look_up_done)

    async def _execute(
        self, job: Received[RoutedRequest], request_id: str, look_up_done: bool
    ) -> None:
        # While Redis is down the call waits for it (its lane slot held, so the lane slows to
        # a stop), rather than run a request that may have been answered already.
        if look_up_done and await until_written(
            "redis.router_done", self.marks.done, request_id, retryable=REDIS_DOWN
        ):
            log.info("router: %s already answered; not executed again", request_id)
            return
        try:
            outcome = await self.executor.run(job.event)
        except Exception as error:  # a bug or a lost dependency: answer, dead-letter, go on
            log.exception("router: executing %s failed", request_id)
            outcome = internal_failure(job.event, error)
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


def lane_decoder(read: Callable[[bytes], T]) -> Callable[[Record], T | Rejected]:
    """`read` (raising `DecodeError`) as a lane's decode: what it cannot read is dead-lettered."""

    def decode(record: Record) -> T | Rejected:
        if record.value is None:
            return Rejected("json", "unreadable lane message: empty message (no value)")
        try:
            return read(record.value)
        except DecodeError as error:
            return Rejected(error.kind, f"unreadable lane message: {error.reason}")

    return decode


def declare_lane(
    spec: ConsumerSpec,
    *,
    read: Callable[[bytes], T],
    handle: Callable[[Received[T]], Awaitable[None]],
    dead_letter: DeadLetterWriter,
    concurrency: int,
    holding: HeldRelease[T] | None = None,
    stop_grace_seconds: float = STOP_GRACE_S,
    express: Express | None = None,
) -> RecordFlow[T]:
    """A lane: `spec` (see `lane_spec`), `read` each message, `handle` it, at most
    `concurrency` at a time; with `holding`, held back until it releases them; with
    `express`, told what the lane owns and stopped after it."""
    lane = spec.flow.removeprefix("router-")
    in_flight = LANE_IN_FLIGHT.labels(lane=lane)
    holds: Holding[T] | None = holding
    return RecordFlow(
        spec=spec,
        decode=lane_decoder(read),
        dead_letter=dead_letter,
        handle=handle,
        concurrency=max(1, concurrency),
        holding=holds,
        stop_grace_seconds=stop_grace_seconds,
        in_flight_changed=in_flight.set,
        ownership=express,
        closers=(express.stop,) if express is not None else (),
    )
