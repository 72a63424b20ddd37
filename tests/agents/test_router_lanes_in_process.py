"""Each lane runs in-process from a list of records, with no servers: the held lane releases
what cannot wait to ai.requests.ready and keeps the rest (uncommitted) outside its window; an
execution lane runs calls out of order, dead-letters what it cannot read and commits only up
to the lowest call not finished. /ready counts a lane among the flows it waits for."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from aiokafka import TopicPartition

from agents.router.keys import Limit, TokenBuckets
from agents.router.lane_consumer import DeferredPlan, HeldRelease, declare_lane, lane_spec
from agents.router.lanes import OffPeak
from runtime.concurrent import ConcurrentRunner
from runtime.service import Running
from runtime.source import Received
from runtime.testing import DeadLetterList, ListConsumer, Started, records, run_records
from schemas import decode, encode
from schemas.events import AIRequest, RoutedRequest
from schemas.examples import example
from scribe.web import joining, readiness
from topics.catalog import AI_LANE_NORMAL, AI_LANE_URGENT, AI_REQUESTS_HELD


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def window_excluding(now: datetime) -> OffPeak:
    start = now + timedelta(hours=3)
    end = start + timedelta(hours=1)
    return OffPeak(start.time().replace(microsecond=0), end.time().replace(microsecond=0))


async def test_the_held_lane_releases_what_cannot_wait_and_holds_the_rest() -> None:
    now = datetime.now(UTC)
    far = example(AIRequest, priority="background", deadline=now + timedelta(hours=6))
    near = example(AIRequest, priority="background", deadline=now + timedelta(seconds=5))
    consumer = ListConsumer(
        records(AI_REQUESTS_HELD.name, [encode(near), b"{not json", encode(far)])
    )
    # Outside the window the rate gate is never asked: its Redis may as well be unreachable.
    unreachable = aioredis.Redis(host="127.0.0.1", port=_closed_port())
    plan = DeferredPlan(
        rate_gate=TokenBuckets(unreachable, "held-test", ["held"], [Limit(5, 1000)]),
        offpeak=window_excluding(now),
        promote_before=timedelta(seconds=30),
        max_held=100,
    )
    holding: HeldRelease[AIRequest] = HeldRelease("held", plan, lambda r: r.deadline)
    released: list[AIRequest] = []

    async def release(job: Received[AIRequest]) -> None:
        released.append(job.event)

    dead = DeadLetterList()
    lane = Started(
        declare_lane(
            lane_spec("held", AI_REQUESTS_HELD),
            read=lambda value: decode(value, AIRequest),
            handle=release,
            dead_letter=dead,
            concurrency=4,
            holding=holding,
        ),
        consumer,
    )
    await lane.start()
    try:
        async with asyncio.timeout(5):
            while not (released and len(holding) == 1):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.7)  # past a commit round
        assert not lane.crashed
    finally:
        await lane.stop()
        await unreachable.aclose()

    assert [r.request_id for r in released] == [near.request_id]
    assert [(d.record.offset, d.kind) for d in dead.letters] == [(1, "json")]
    assert "unreadable lane message" in dead.letters[0].reason
    # The far request (offset 2) is still held: the commit stops before it.
    assert consumer.committed == {TopicPartition(AI_REQUESTS_HELD.name, 0): 2}


async def test_an_execution_lane_commits_up_to_the_lowest_unfinished_call() -> None:
    requests = [example(RoutedRequest) for _ in range(6)]
    values: list[bytes | None] = [encode(r) for r in requests]
    values.insert(3, None)  # an empty message: dead-lettered, never executed
    consumer = ListConsumer(records(AI_LANE_NORMAL.name, values))
    partition = TopicPartition(AI_LANE_NORMAL.name, 0)
    first_may_finish, others_done = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def execute(job: Received[RoutedRequest]) -> None:
        if job.origin.offset == 0:
            await first_may_finish.wait()  # a slow provider call
        done.append(job.event.request.request_id)
        if len(done) == len(requests) - 1:
            others_done.set()

    dead = DeadLetterList()
    lane = Started(
        declare_lane(
            lane_spec("normal", AI_LANE_NORMAL),
            read=lambda value: decode(value, RoutedRequest),
            handle=execute,
            dead_letter=dead,
            concurrency=3,
        ),
        consumer,
    )
    await lane.start()
    try:
        await asyncio.wait_for(others_done.wait(), 5)
        await asyncio.sleep(0.7)  # past a commit round
        assert consumer.committed == {partition: 0}, "the slow first call holds the commit"
        first_may_finish.set()
        await lane.settled(5)
    finally:
        await lane.stop()

    ids = [r.request.request_id for r in requests]
    assert done[-1] == ids[0] and sorted(done) == sorted(ids)
    assert [(d.record.offset, d.kind) for d in dead.letters] == [(3, "json")]
    assert consumer.committed == {partition: 7}
    assert lane.runner.in_flight == 0 and not lane.crashed


async def test_run_records_runs_a_lane_to_the_end() -> None:
    consumer = ListConsumer(records(AI_LANE_NORMAL.name, [b"a", b"b", b"c"], partition=1))
    seen: list[bytes] = []

    async def handle(job: Received[bytes]) -> None:
        seen.append(job.event)

    await run_records(
        declare_lane(
            lane_spec("normal", AI_LANE_NORMAL),
            read=lambda value: value,
            handle=handle,
            dead_letter=DeadLetterList(),
            concurrency=2,
        ),
        consumer,
        timeout=5,
    )
    assert sorted(seen) == [b"a", b"b", b"c"]
    assert consumer.committed == {TopicPartition(AI_LANE_NORMAL.name, 1): 3}


async def test_not_ready_until_a_lane_joins_its_group() -> None:
    """A router lane (a per-record flow) counts among the flows /ready waits for."""

    async def handle(job: object) -> None:
        return None

    flow = declare_lane(
        lane_spec("urgent", AI_LANE_URGENT),
        read=lambda value: value,
        handle=handle,
        dead_letter=DeadLetterList(),
        concurrency=1,
    )
    running: Running[ConcurrentRunner[bytes]] = Running()
    flows = {"router-urgent": running}
    assert joining(flows) == ["router-urgent"], "not built yet"
    running.runner = ConcurrentRunner(flow, ListConsumer(records(AI_LANE_URGENT.name, [b"x"])))
    assert joining(flows) == ["router-urgent"], "built, not yet in its group"
    assert readiness(200, joining(flows))[0] is False
    await running.runner.start()  # the group assigns its partitions
    assert joining(flows) == []
    await running.runner.partitions_revoked(frozenset(running.runner.source.owned))
    assert joining(flows) == ["router-urgent"], "a rebalance under way"
    await running.runner.stop()
