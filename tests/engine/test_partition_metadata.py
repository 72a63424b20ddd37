"""Readers without a group find their topics' partitions on Apache Kafka. A consumer's
`partitions_for_topic` knows only topics it fetched metadata for (on Tansu every topic is in the
first answer, on Apache Kafka none is), so the gateway's ai.responses reader waited about 30 s
for a metadata refresh and `scribe dlq` saw no partitions."""

from __future__ import annotations

import time
import uuid

import pytest

from runtime import kafka
from runtime.settings import ResolvedSettings, Settings, kafka_bootstrap_servers
from scribe.gateway.ai_responses import ResponseWaiter
from topics.admin import ensure_topics, existing_partitions
from topics.catalog import AI_RESPONSES, USAGE_EVENTS
from topics.dlq_reader import DeadLetterReader
from topics.publisher import Publisher

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
async def settings(services: dict[str, str]) -> ResolvedSettings:
    resolved = Settings(
        kafka_url=services["SCRIBE_KAFKA_URL"],
        database_url=services["SCRIBE_DATABASE_URL"],
        redis_url=services["SCRIBE_REDIS_URL"],
    ).require()
    await ensure_topics(resolved)
    return resolved


async def test_existing_partitions_come_from_the_brokers(settings: ResolvedSettings) -> None:
    missing = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    partitions = await existing_partitions(settings, [AI_RESPONSES.name, missing])
    assert {tp.topic for tp in partitions} == {AI_RESPONSES.name}
    # A producer asks for the topic's own metadata: the other way to learn its partitions.
    producer = kafka.producer(settings)
    await producer.start()
    try:
        expected = await producer.partitions_for(AI_RESPONSES.name)
    finally:
        await producer.stop()
    assert [tp.partition for tp in partitions] == sorted(expected)
    # Asking did not create the missing topic.
    assert await existing_partitions(settings, [missing]) == []


async def test_the_gateway_reads_answers_within_seconds(settings: ResolvedSettings) -> None:
    waiter = ResponseWaiter(settings)
    started = time.monotonic()
    await waiter.start(wait_s=20)
    try:
        assert waiter.ready, "the ai.responses reader did not start within 20 s"
        print(f"ai.responses reader ready in {time.monotonic() - started:.1f} s")
    finally:
        await waiter.stop()


async def test_dead_letters_are_found(settings: ResolvedSettings) -> None:
    dlq = USAGE_EVENTS.dlq_name
    async with Publisher(kafka_bootstrap_servers(settings.kafka_url)) as publisher:
        await publisher.publish_raw([(dlq, b"key", b'{"not": "a usage event"}')])
    async with DeadLetterReader(settings, [dlq]) as reader:
        assert reader.missing == []
        assert reader.total >= 1
