"""The per-record runner in-process: its periodic commit runs behind the reading."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiokafka import TopicPartition

from runtime.concurrent import RecordFlow
from runtime.source import Received, Record, Rejected
from runtime.spec import ConsumerSpec
from runtime.testing import DeadLetterList, ListConsumer, Started, records

TOPIC = "jobs"


def decode_int(record: Record) -> int | Rejected:
    return int(record.value or b"0")


async def test_records_start_while_a_commit_waits_for_the_coordinator() -> None:
    """A commit held at the coordinator does not hold the records read after it; the commit
    that ends the run covers them all."""
    coordinator_answers = asyncio.Event()
    commit_sent = asyncio.Event()
    started: list[int] = []
    consumer = ListConsumer(records(TOPIC, [b"0", b"1"]))
    original = consumer.commit

    async def held_commit(offsets: Mapping[TopicPartition, int]) -> None:
        commit_sent.set()
        await coordinator_answers.wait()
        await original(offsets)

    consumer.commit = held_commit  # type: ignore[method-assign]

    async def handle(job: Received[int]) -> None:
        started.append(job.event)

    flow = RecordFlow(
        spec=ConsumerSpec("jobs", (TOPIC,), poll_ms=20),
        decode=decode_int,
        dead_letter=DeadLetterList(),
        handle=handle,
        concurrency=4,
        commit_seconds=0.05,
    )
    runner = Started(flow, consumer)
    await runner.start()
    try:
        await asyncio.wait_for(commit_sent.wait(), 5)
        consumer.append(records(TOPIC, [b"2", b"3"]))
        async with asyncio.timeout(5):
            while len(started) < 4:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert consumer.committed == {}, "the coordinator has not answered yet"
    finally:
        coordinator_answers.set()
        await runner.stop()

    assert started == [0, 1, 2, 3]
    assert consumer.committed == {TopicPartition(TOPIC, 0): 4}
