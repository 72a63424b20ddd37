"""The per-record runner in-process: its periodic commit runs behind the reading, and the
stop waits for it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import pytest
from aiokafka import TopicPartition

from runtime.concurrent import RecordFlow
from runtime.source import Received, Record, Rejected
from runtime.spec import ConsumerSpec
from runtime.testing import DeadLetterList, ListConsumer, Started, records

TOPIC = "jobs"


def decode_int(record: Record) -> int | Rejected:
    return int(record.value or b"0")


def jobs_flow(started: list[int]) -> RecordFlow[int]:
    async def handle(job: Received[int]) -> None:
        started.append(job.event)

    return RecordFlow(
        spec=ConsumerSpec("jobs", (TOPIC,), poll_ms=20),
        decode=decode_int,
        dead_letter=DeadLetterList(),
        handle=handle,
        concurrency=4,
        commit_seconds=0.05,
    )


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
    runner = Started(jobs_flow(started), consumer)
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


async def test_a_commit_behind_the_reads_that_fails_during_the_stop_is_logged_by_the_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The read loop has ended when the commit still running behind it fails: the stop waits
    for it, logs its error, and still makes its own commit."""
    coordinator_answers = asyncio.Event()
    commit_sent = asyncio.Event()
    started: list[int] = []
    consumer = ListConsumer(records(TOPIC, [b"0", b"1"]))
    original = consumer.commit
    calls = 0

    async def failing_first_commit(offsets: Mapping[TopicPartition, int]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            commit_sent.set()
            await coordinator_answers.wait()
            raise RuntimeError("the coordinator's answer could not be read")
        await original(offsets)

    consumer.commit = failing_first_commit  # type: ignore[method-assign]
    runner = Started(jobs_flow(started), consumer)
    await runner.start()
    await asyncio.wait_for(commit_sent.wait(), 5)
    stopping = asyncio.create_task(runner.stop())
    await asyncio.sleep(0.1)  # the read loop ends; the commit behind it has not answered
    assert not stopping.done()
    with caplog.at_level(logging.ERROR, logger="runtime"):
        coordinator_answers.set()
        await asyncio.wait_for(stopping, 10)

    assert "the coordinator's answer could not be read" in caplog.text
    assert "committing what finished failed" in caplog.text
    assert consumer.committed == {TopicPartition(TOPIC, 0): 2}
