"""The batch source against a real broker (the embedded stack): two members of one group on
two topics keyed alike share the partitions with the range assignor (partition p of both to
one member), every record is written, and the group's committed offsets reach the end."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Mapping

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from runtime import kafka
from runtime.flow import Flow, FlowRunner
from runtime.settings import ResolvedSettings, Settings
from runtime.source import Received, Record, Rejected
from runtime.spec import Assignor, ConsumerSpec
from runtime.testing import DeadLetterList
from tests.faults.observe import eventually

pytestmark = pytest.mark.integration

PARTITIONS = 4
PER_PARTITION = 5


def decode_text(record: Record) -> str | Rejected:
    return (record.value or b"").decode()


class Member:
    """A sink and rebalance hooks that remember what this member was given and wrote."""

    def __init__(self) -> None:
        self.written: list[tuple[str, int, str]] = []
        self.owned: frozenset[TopicPartition] = frozenset()

    async def write(self, batch: list[Received[str]]) -> None:
        self.written.extend((r.origin.topic, r.origin.partition, r.event) for r in batch)

    async def close(self) -> None:
        return None

    def assigned(self, partitions: frozenset[TopicPartition], counts: Mapping[str, int]) -> None:
        self.owned = partitions

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        self.owned = self.owned - partitions


async def test_two_members_share_both_topics_partition_by_partition(kafka_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    settings = dataclasses.replace(
        Settings.from_env(),
        kafka_url=kafka_url,
        database_url="postgresql://unused",
        redis_url="redis://unused",
        app_id=f"runtime-{run}",
        fast_rebalance=True,
    ).require()
    topics = (f"rt-{run}-a", f"rt-{run}-b")
    await _create(settings, topics)
    await _produce(settings, topics)
    spec = ConsumerSpec("pairs", topics, max_batch=7, fetch_wait_ms=20, assignor=Assignor.RANGE)

    members = [Member(), Member()]
    runners = [
        FlowRunner(
            Flow(
                spec=spec,
                decode=decode_text,
                dead_letter=DeadLetterList(),
                handle=list,
                sinks=[member],
                rebalance=member,
            ),
            kafka.consumer(settings, spec.group(settings), **spec.consumer_options()),
        )
        for member in members
    ]
    for runner in runners:
        await runner.start()
    running = [asyncio.create_task(r.run()) for r in runners]
    total = len(topics) * PARTITIONS * PER_PARTITION

    async def all_written_and_committed() -> bool:
        return (
            all(m.owned for m in members)
            and len({w for m in members for w in m.written}) == total
            and await _committed(settings, spec, topics) == total
        )

    try:
        assert await eventually(all_written_and_committed, timeout=90)
        for member in members:
            by_topic = [{tp.partition for tp in member.owned if tp.topic == t} for t in topics]
            assert by_topic[0] == by_topic[1], "partition p of both topics is one member's"
    finally:
        for runner in runners:
            await runner.stop()
        await asyncio.gather(*running)


async def _create(settings: ResolvedSettings, topics: tuple[str, ...]) -> None:
    admin = kafka.admin(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    finally:
        await admin.close()


async def _produce(settings: ResolvedSettings, topics: tuple[str, ...]) -> None:
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for topic in topics:
            for partition in range(PARTITIONS):
                for i in range(PER_PARTITION):
                    value = f"{topic}/{partition}/{i}".encode()
                    await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


async def _committed(
    settings: ResolvedSettings, spec: ConsumerSpec, topics: tuple[str, ...]
) -> int:
    reader = kafka.consumer(settings, spec.group(settings))
    await reader.start()
    try:
        offsets = [
            await reader.committed(TopicPartition(t, p)) or 0
            for t in topics
            for p in range(PARTITIONS)
        ]
    finally:
        await reader.stop()
    return sum(offsets)
