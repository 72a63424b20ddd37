"""The publisher: keyed, encoded, acknowledged; idempotence where the broker grants it; the
synchronous wrapper for code that is not async."""

from __future__ import annotations

import os
import threading
import uuid

import pytest
from aiokafka.errors import KafkaConnectionError

from devkit.harness import read_until
from devkit.stack.processes import free_port
from runtime.settings import kafka_bootstrap_servers
from schemas import decode
from schemas.events import UsageEvent, WorldTick
from schemas.examples import example
from topics.catalog import USAGE_EVENTS, WORLD_TICKS
from topics.publisher import (
    Idempotence,
    IdempotenceUnavailableError,
    Publisher,
    PublishError,
    SyncPublisher,
    WrongTopicError,
)

EMBEDDED = not os.environ.get("SCRIBE_KAFKA_URL")


async def test_an_event_for_another_topic_is_refused_before_anything_is_sent() -> None:
    publisher = Publisher(["127.0.0.1:1"])  # never started: the check comes first
    with pytest.raises(WrongTopicError, match=r"a UsageEvent cannot go to world\.ticks"):
        await publisher.publish(example(UsageEvent), WORLD_TICKS)


async def test_publishing_before_start_says_how_to_start() -> None:
    with pytest.raises(PublishError, match="async with Publisher"):
        await Publisher(["127.0.0.1:1"]).publish(example(WorldTick))


def test_the_sync_publisher_says_how_to_start() -> None:
    with pytest.raises(PublishError, match="with SyncPublisher"):
        SyncPublisher(["127.0.0.1:1"]).publish(example(WorldTick))


@pytest.mark.integration
async def test_publish_returns_once_stored_keyed_by_the_family_key(kafka_url: str) -> None:
    user = f"pub-{uuid.uuid4().hex[:8]}"
    event = example(UsageEvent, user_id=user)
    async with Publisher(kafka_bootstrap_servers(kafka_url)) as publisher:
        metadata = await publisher.publish(event)
    assert metadata.topic == USAGE_EVENTS.name
    records = await read_until(
        kafka_url,
        USAGE_EVENTS.name,
        done=lambda kept: len(kept) >= 1,
        match=lambda r: r.key == user.encode(),
    )
    assert [(r.partition, r.offset) for r in records] == [(metadata.partition, metadata.offset)]
    assert records[0].value is not None
    assert decode(records[0].value, UsageEvent) == event


@pytest.mark.integration
async def test_idempotence_auto_follows_what_the_broker_grants(kafka_url: str) -> None:
    servers = kafka_bootstrap_servers(kafka_url)
    try:
        async with Publisher(servers, Idempotence.ON) as required:
            granted = required.idempotent
    except IdempotenceUnavailableError as exc:
        granted = False
        assert "SCRIBE_PRODUCER_IDEMPOTENCE" in str(exc)
    if EMBEDDED:
        assert not granted, "Tansu answers InitProducerId with an error"
    world = f"idem-{uuid.uuid4().hex[:8]}"
    async with Publisher(servers, Idempotence.AUTO) as publisher:
        assert publisher.idempotent == granted
        sent = await publisher.publish_many(
            [example(WorldTick, world_id=world, tick=t) for t in range(1, 51)]
        )
    async with Publisher(servers, Idempotence.OFF) as plain:
        assert not plain.idempotent
    assert sent == 50
    records = await read_until(
        kafka_url,
        WORLD_TICKS.name,
        done=lambda kept: len(kept) >= 50,
        match=lambda r: r.key == world.encode(),
    )
    ticks = [decode(r.value or b"", WorldTick).tick for r in records]
    assert ticks == list(range(1, 51)), "one key, one partition: in order, each once"


@pytest.mark.integration
async def test_the_sync_publisher_serves_several_threads(kafka_url: str) -> None:
    world = f"sync-{uuid.uuid4().hex[:8]}"
    failures: list[BaseException] = []

    def publish_ticks(publisher: SyncPublisher, first: int) -> None:
        try:
            for tick in range(first, first + 20):
                publisher.publish(example(WorldTick, world_id=world, tick=tick))
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    with SyncPublisher(kafka_bootstrap_servers(kafka_url)) as publisher:
        threads = [
            threading.Thread(target=publish_ticks, args=(publisher, first))
            for first in (0, 100, 200)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert publisher.publish_many([example(WorldTick, world_id=world, tick=999)]) == 1
    assert failures == []
    records = await read_until(
        kafka_url,
        WORLD_TICKS.name,
        done=lambda kept: len(kept) >= 61,
        match=lambda r: r.key == world.encode(),
    )
    ticks = sorted(decode(r.value or b"", WorldTick).tick for r in records)
    assert ticks == [*range(20), *range(100, 120), *range(200, 220), 999]


async def test_no_broker_is_an_error_not_a_reason_to_drop_idempotence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    servers = [f"127.0.0.1:{free_port()}"]
    with pytest.raises(KafkaConnectionError):
        await Publisher(servers, Idempotence.AUTO, request_timeout_ms=2_000).start()
    assert "did not grant a producer id" not in caplog.text
