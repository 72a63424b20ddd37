"""A lane's stop is bounded: calls still in flight after the grace are cancelled and left
uncommitted (they run again after the restart), what finished is committed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import TopicPartition

from agents.router.lane_consumer import declare_lane, lane_spec
from runtime.source import Received, Record
from runtime.testing import ListConsumer, Started, records
from topics.catalog import AI_LANE_URGENT, TopicSpec

TOPIC = AI_LANE_URGENT.name
PARTITION = TopicPartition(TOPIC, 0)


async def no_dead_letter(record: Record, kind: str, reason: str) -> None:
    raise AssertionError(f"unexpected dead letter {kind}: {reason}")


def lane(
    consumer: ListConsumer,
    handle: Any,
    spec: TopicSpec = AI_LANE_URGENT,
    grace: float = 3.0,
    **options: Any,
) -> Started:
    """A lane of raw payloads on `spec`, four calls at a time, reading `consumer` in-process."""
    flow = declare_lane(
        lane_spec(spec.name.rsplit(".", 1)[-1], spec),
        read=lambda value: value,
        handle=handle,
        dead_letter=no_dead_letter,
        concurrency=4,
        stop_grace_seconds=grace,
        **options,
    )
    return Started(flow, consumer)


async def test_a_call_held_at_stop_is_abandoned_uncommitted_within_the_grace() -> None:
    consumer = ListConsumer(records(TOPIC, [b"quick", b"held", b"quick-too"]))
    handled: list[bytes] = []
    held, both_quick_done = asyncio.Event(), asyncio.Event()

    async def handle(job: Received[bytes]) -> None:
        if job.event == b"held":
            held.set()
            await asyncio.sleep(3600)  # a provider holding the call
        handled.append(job.event)
        if len(handled) == 2:
            both_quick_done.set()

    service = lane(consumer, handle, grace=0.5)
    await service.start()
    await asyncio.wait_for(asyncio.gather(held.wait(), both_quick_done.wait()), 5)

    started = time.monotonic()
    await asyncio.wait_for(service.stop(), 5)
    took = time.monotonic() - started

    assert 0.5 <= took < 2.0, took
    assert sorted(handled) == [b"quick", b"quick-too"]
    # Offset 1 (held) did not finish: the commit stops before it, so a restart reads it again.
    assert consumer.committed == {PARTITION: 1}
    assert consumer.stopped


async def test_calls_that_finish_within_the_grace_are_committed() -> None:
    consumer = ListConsumer(records(TOPIC, [b"a", b"slow", b"b"]))
    slow_started = asyncio.Event()
    handled: list[bytes] = []

    async def handle(job: Received[bytes]) -> None:
        if job.event == b"slow":
            slow_started.set()
            await asyncio.sleep(0.3)
        handled.append(job.event)

    service = lane(consumer, handle, grace=5.0)
    await service.start()
    await asyncio.wait_for(slow_started.wait(), 5)
    await asyncio.wait_for(service.stop(), 5)

    assert sorted(handled) == [b"a", b"b", b"slow"]
    assert consumer.committed == {PARTITION: 3}
