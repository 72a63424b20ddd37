"""Bad input on every input topic lands in that topic's .dlq with its reason; the worker keeps
running and processes the valid messages after it."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import RecordMetadata

from agents import consumer_group
from devkit.harness import Record, WorkerProcess, group_offsets, read_until
from runtime.settings import kafka_bootstrap_servers
from schemas import encode
from schemas.events import UsageEvent
from schemas.examples import example
from topics.catalog import INPUT_TOPICS, TopicSpec
from topics.dlq import H_ERROR, H_ERROR_KIND, H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC

pytestmark = pytest.mark.integration


async def _committed_past(
    kafka_url: str, group: str, sent: RecordMetadata, timeout: float = 30
) -> bool:
    """True once the worker's group has committed beyond the message `sent`."""

    async with group_offsets(kafka_url, group) as consumer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            committed = await consumer.committed(TopicPartition(sent.topic, sent.partition))
            if committed is not None and committed > sent.offset:
                return True
            await asyncio.sleep(0.5)
        return False


@pytest.mark.parametrize("spec", INPUT_TOPICS, ids=lambda s: s.name)
async def test_bad_input_goes_to_dlq_and_valid_input_after_it_is_processed(
    spec: TopicSpec, kafka_url: str, worker: WorkerProcess, db: asyncpg.Connection
) -> None:
    marker = uuid.uuid4().hex
    key = f"key-{marker}".encode()
    malformed = f'{{"marker": "{marker}", '.encode()
    violating = f'{{"marker": "{marker}", "schema_version": 1}}'.encode()
    valid_event = example(spec.model)
    valid = encode(valid_event)

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers(kafka_url))
    await producer.start()
    try:
        # One key, so all three land on one partition in this order.
        sent = [
            await producer.send_and_wait(spec.name, v, key=key)
            for v in (malformed, violating, valid)
        ]
    finally:
        await producer.stop()

    dead = await read_until(
        kafka_url,
        spec.dlq_name,
        done=lambda kept: len(kept) >= 2,
        match=lambda r: r.value is not None and marker.encode() in r.value,
    )
    assert len(dead) == 2, worker.log_tail()
    by_value = {r.value: r for r in dead}
    _assert_dead_letter(by_value[malformed], spec, "json", sent[0].partition, sent[0].offset)
    _assert_dead_letter(by_value[violating], spec, "schema", sent[1].partition, sent[1].offset)
    assert b"Field required" in by_value[violating].headers[H_ERROR]

    group = consumer_group(worker.app_id, spec.name)
    assert await _committed_past(kafka_url, group, sent[2]), (
        f"the valid message after the bad ones was not processed:\n{worker.log_tail()}"
    )
    if isinstance(valid_event, UsageEvent):
        stored = await db.fetchval(
            "SELECT cost_usd FROM usage_events WHERE event_id = $1", valid_event.event_id
        )
        assert stored == valid_event.cost_usd, worker.log_tail()
    assert worker.alive()


def _assert_dead_letter(
    record: Record, spec: TopicSpec, kind: str, partition: int, offset: int
) -> None:
    assert record.headers[H_ERROR_KIND] == kind.encode()
    assert record.headers[H_SOURCE_TOPIC] == spec.name.encode()
    assert record.headers[H_SOURCE_PARTITION] == str(partition).encode()
    assert record.headers[H_SOURCE_OFFSET] == str(offset).encode()
    assert record.headers[H_ERROR]
    assert record.key is not None and record.key.startswith(b"key-")
