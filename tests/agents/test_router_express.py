"""The express hand-off: decide's urgent and normal requests run at once when this worker's
lane owns the partition their lane message goes to. The lane then waits for that call rather
than calling again. Not run here: what is not owned, over the lane's limit, another lane's,
sent twice, or a redelivered batch's decision. A partition moves only once its calls
finished; a stop cancels what outlives the grace and runs nothing more."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from aiokafka import TopicPartition

from agents.router.decide import LANE_TOPICS, Emit
from agents.router.express import Express
from agents.router.lane_consumer import declare_lane, lane_spec
from runtime.partitioner import partition_of
from runtime.source import Received, Record
from runtime.testing import DeadLetterList, ListConsumer, Started
from schemas import decode, encode
from schemas.events import Lane, RoutedRequest
from schemas.examples import example
from topics.catalog import AI_LANE_DEFERRED, AI_LANE_NORMAL, AI_LANE_URGENT

PARTITIONS = 4


class Calls:
    """An executor that records each call and may be held until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, job: Received[RoutedRequest]) -> None:
        self.started.append(job.event.request.request_id)
        await self.release.wait()
        self.finished.append(job.event.request.request_id)


def lane_emit(lane: Lane = Lane.URGENT) -> Emit:
    routed = example(RoutedRequest)
    return Emit(
        LANE_TOPICS[lane], routed.request.user_id.encode(), encode(routed), decided_now=routed
    )


def decided_lane_emit(like: Emit) -> Emit:
    """Another request's decision, for the same lane partition as `like`."""
    routed = example(RoutedRequest)
    return Emit(like.spec, like.key, encode(routed), decided_now=routed)


def partition_for(emit: Emit) -> TopicPartition:
    return TopicPartition(emit.spec.name, partition_of(emit.key, PARTITIONS))


def owning(express: Express, *partitions: TopicPartition) -> Express:
    counts = {tp.topic: PARTITIONS for tp in partitions}
    express.assigned(frozenset(partitions), counts)
    return express


def request_id(emit: Emit) -> str:
    return decode(emit.value, RoutedRequest).request.request_id


def as_received(emit: Emit, offset: int = 0) -> Received[RoutedRequest]:
    tp = partition_for(emit)
    origin = Record(tp.topic, tp.partition, offset, emit.key, emit.value)
    return Received(decode(emit.value, RoutedRequest), origin)


async def test_a_request_whose_lane_partition_is_owned_here_runs_once_and_the_lane_waits() -> None:
    calls, lane_calls = Calls(), Calls()
    emit = lane_emit()
    express = owning(Express(calls, {Lane.URGENT: 4}, 1.0), partition_for(emit))
    calls.release.clear()

    express.offer([emit])
    await asyncio.sleep(0)
    assert calls.started == [request_id(emit)]

    handle = express.or_run(lane_calls)
    reading = asyncio.ensure_future(handle(as_received(emit)))
    await asyncio.sleep(0.05)
    assert not reading.done(), "the lane waits for the call started here"
    calls.release.set()
    await asyncio.wait_for(reading, 1)
    assert calls.finished == [request_id(emit)]
    assert lane_calls.started == []


async def test_not_owned_not_urgent_or_normal_or_resent_is_left_to_its_lane() -> None:
    calls, lane_calls = Calls(), Calls()
    owned, elsewhere, deferred = lane_emit(), lane_emit(Lane.NORMAL), lane_emit(Lane.DEFERRED)
    resent = replace(lane_emit(), key=owned.key, decided_now=None)  # a redelivered batch's
    express = owning(
        Express(calls, {Lane.URGENT: 4, Lane.NORMAL: 4}, 1.0),
        partition_for(owned),
        TopicPartition(AI_LANE_DEFERRED.name, partition_for(deferred).partition),
    )
    express.offer([owned, elsewhere, deferred, resent])
    await asyncio.sleep(0)
    assert calls.started == [request_id(owned)]

    handle = express.or_run(lane_calls)
    for emit in (elsewhere, deferred, resent):
        await handle(as_received(emit))
    assert lane_calls.started == [request_id(e) for e in (elsewhere, deferred, resent)]


async def test_at_most_the_lanes_limit_runs_here_and_a_resent_request_runs_once() -> None:
    calls = Calls()
    calls.release.clear()
    emits = [lane_emit(Lane.NORMAL) for _ in range(3)]
    express = owning(Express(calls, {Lane.NORMAL: 2}, 1.0), *map(partition_for, emits))

    express.offer(emits)
    express.offer(emits[:1])  # a redelivered batch sends the same decision again
    await asyncio.sleep(0)
    assert calls.started == [request_id(e) for e in emits[:2]]

    calls.release.set()
    await asyncio.sleep(0.01)
    express.offer(emits[2:])  # room again
    await asyncio.sleep(0.01)
    assert calls.finished == [request_id(e) for e in emits]

    # The lane's own calls count too: with one of them in flight, one more runs here.
    lane_calls = Calls()
    lane_calls.release.clear()
    others = [lane_emit(Lane.NORMAL) for _ in range(2)]
    owning(express, *map(partition_for, others))
    lane_call = asyncio.ensure_future(
        express.or_run(lane_calls)(as_received(lane_emit(Lane.NORMAL)))
    )
    await asyncio.sleep(0)
    express.offer(others)
    await asyncio.sleep(0)
    assert calls.started[-1] == request_id(others[0]) and len(calls.started) == 4
    lane_calls.release.set()
    await asyncio.wait_for(lane_call, 1)


async def one_held_call(grace_s: float) -> tuple[Calls, Emit, Express]:
    """An urgent request running here, its provider call held until released."""
    calls = Calls()
    calls.release.clear()
    emit = lane_emit()
    express = owning(Express(calls, {Lane.URGENT: 4}, grace_s), partition_for(emit))
    express.offer([emit])
    await asyncio.sleep(0)
    return calls, emit, express


async def test_a_partition_moves_only_once_its_calls_finished() -> None:
    calls, emit, express = await one_held_call(grace_s=5.0)

    revoking = asyncio.ensure_future(express.revoked(frozenset({partition_for(emit)})))
    await asyncio.sleep(0.05)
    assert not revoking.done(), "the call in flight holds the partition"
    calls.release.set()
    await asyncio.wait_for(revoking, 1)
    assert calls.finished == [request_id(emit)]

    # Also when the lane here has read the message and waits for the call: the partition
    # still moves only once the call finished.
    calls.release.clear()
    read = lane_emit()
    owning(express, partition_for(read))
    express.offer([read])
    lane_calls = Calls()
    reading = asyncio.ensure_future(express.or_run(lane_calls)(as_received(read)))
    await asyncio.sleep(0.01)
    revoking = asyncio.ensure_future(express.revoked(frozenset({partition_for(read)})))
    await asyncio.sleep(0.05)
    assert not revoking.done(), "the call the lane waits for holds the partition"
    calls.release.set()
    await asyncio.wait_for(asyncio.gather(revoking, reading), 1)
    assert lane_calls.started == []

    # No longer owned: the next request for that partition is its new owner's to run.
    again = decided_lane_emit(emit)
    express.offer([again])
    await asyncio.sleep(0)
    assert calls.started == [request_id(emit), request_id(read)]


async def test_a_stop_cancels_calls_that_outlive_the_grace() -> None:
    calls, emit, express = await one_held_call(grace_s=0.1)

    await asyncio.wait_for(express.stop(), 2)
    assert calls.started == [request_id(emit)] and calls.finished == []
    # Decide may still be deciding: what it offers now is left to the lane's next owner.
    express.offer([decided_lane_emit(emit)])
    await asyncio.sleep(0)
    assert calls.started == [request_id(emit)]


async def test_a_lane_tells_express_what_it_owns_and_skips_what_ran_here() -> None:
    calls, lane_calls = Calls(), Calls()
    emit = lane_emit()
    tp = partition_for(emit)
    express = Express(calls, {Lane.URGENT: 4}, 1.0)
    consumer = ListConsumer([], partition_counts={AI_LANE_URGENT.name: PARTITIONS})
    lane = Started(
        declare_lane(
            lane_spec("urgent", AI_LANE_URGENT),
            read=lambda value: decode(value, RoutedRequest),
            handle=express.or_run(lane_calls),
            dead_letter=DeadLetterList(),
            concurrency=2,
            express=express,
        ),
        consumer,
    )
    await lane.start()
    try:
        express.offer([emit, lane_emit(Lane.NORMAL)])  # normal: not this lane's, not owned
        consumer.append([Record(tp.topic, tp.partition, 0, emit.key, emit.value)])
        await lane.settled(5)
    finally:
        await lane.stop()

    assert calls.finished == [request_id(emit)]
    assert lane_calls.started == []
    assert consumer.committed == {tp: 1}
    assert AI_LANE_NORMAL.name not in {t.topic for t in consumer.committed}
