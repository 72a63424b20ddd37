"""A lane survives what it cannot finish: a call that fails is left uncommitted for the next
restart instead of counted as done, and the deferred lane holds its queue while the Redis
behind its rate gate is down, instead of crashing the worker."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta

import redis.asyncio as aioredis
from aiokafka import TopicPartition
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from agents.router.keys import Limit, TokenBuckets
from agents.router.lane_consumer import DeferredPlan, HeldRelease
from runtime.source import Received
from runtime.testing import ListConsumer, records
from tests.agents.test_router_lane_stop import lane
from topics.catalog import AI_LANE_DEFERRED, AI_LANE_URGENT

URGENT = TopicPartition(AI_LANE_URGENT.name, 0)


async def test_a_call_that_fails_is_not_committed_and_the_lane_goes_on() -> None:
    consumer = ListConsumer(records(AI_LANE_URGENT.name, [b"a", b"fails", b"b"]))
    handled: list[bytes] = []
    both_done = asyncio.Event()

    async def handle(job: Received[bytes]) -> None:
        if job.event == b"fails":
            raise ConnectionError("Redis is down")
        handled.append(job.event)
        if len(handled) == 2:
            both_done.set()

    service = lane(consumer, handle)
    await service.start()
    await asyncio.wait_for(both_done.wait(), 5)
    assert not service.crashed
    await asyncio.wait_for(service.stop(), 5)

    assert sorted(handled) == [b"a", b"b"]
    # The commit stops before the failed call: a restart reads it again.
    assert consumer.committed == {URGENT: 1}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once the probe is closed


async def test_the_deferred_lane_holds_its_queue_while_redis_is_down() -> None:
    # No retries inside the client: each poll's gate call fails at once.
    unreachable = aioredis.Redis(
        host="127.0.0.1", port=_closed_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    plan = DeferredPlan(
        rate_gate=TokenBuckets(unreachable, "lane-test", ["lane"], [Limit(5, 1000)]),
        offpeak=None,
        promote_before=timedelta(seconds=0),
        max_held=100,
    )
    consumer = ListConsumer(records(AI_LANE_DEFERRED.name, [b"x", b"y"]))
    handled: list[bytes] = []

    async def handle(job: Received[bytes]) -> None:
        handled.append(job.event)

    holding: HeldRelease[bytes] = HeldRelease("deferred", plan, lambda _: None)
    service = lane(consumer, handle, AI_LANE_DEFERRED, holding=holding)
    await service.start()
    try:
        async with asyncio.timeout(5):
            while len(holding) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # many polls, each asking the unreachable gate
        assert not service.crashed
        assert handled == [] and len(holding) == 2
    finally:
        await asyncio.wait_for(service.stop(), 5)
        await unreachable.aclose()
    # Nothing was released, so nothing is committed past (offset 0 is the first record).
    assert all(offset == 0 for offset in consumer.committed.values())
