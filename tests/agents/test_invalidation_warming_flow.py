"""The cache-warming flow run in-process (runtime.testing): a batch of world.events with bad
records mixed in warms each loaded world once, counts the bad records without dead-lettering
them and commits past them all; with the real PostgreSQL and Redis, the world's hot entries
land in Redis, and a Redis that is down is counted `failed` without holding the flow."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from agents.invalidation.config import InvalidationSettings
from agents.invalidation.hot_keys import section_key, world_key
from agents.invalidation.warming import WARM_CONCURRENCY, CacheWarmer, WarmingSink
from agents.invalidation.warming_flow import BAD_INPUT, WARMING, declare
from cache import CacheClient
from runtime.testing import ListConsumer, ListSink, records, run_flow
from schemas import encode
from sinks.postgres.databases import Databases
from sinks.postgres.migrate import migrate
from tests.agents.world_fixtures import world_event
from topics.catalog import WORLD_EVENTS

CONFIG = InvalidationSettings()
TOPIC = WORLD_EVENTS.name


def warming(outcome: str) -> float:
    return REGISTRY.get_sample_value("scribe_cache_warming_total", {"outcome": outcome}) or 0.0


def loaded(world_id: str) -> bytes:
    return encode(world_event(world_id, "world_loaded"))


def batch_with_bad_records(w1: str, w2: str) -> list[bytes | None]:
    return [
        loaded(w1),
        b"not json",
        encode(world_event("w-other", "npc_created", npc_id="mira", name="Mira")),
        None,  # a tombstone
        b'{"world_id": "w-x", "type": "world_loaded"}',  # fields missing
        loaded(w2),
        loaded(w1),
    ]


async def test_a_batch_warms_each_loaded_world_once_and_skips_bad_records_counted() -> None:
    sink: ListSink[list[str]] = ListSink()
    consumer = ListConsumer(records(TOPIC, batch_with_bad_records("w1", "w2")))
    skipped = warming(BAD_INPUT)

    runner = await run_flow(declare(CONFIG, sink), consumer)

    assert [world for batch in sink.batches for world in batch] == ["w1", "w2"]
    assert warming(BAD_INPUT) == skipped + 3
    assert consumer.committed == {TopicPartition(TOPIC, 0): 7}
    assert sink.closed
    assert runner.flow.spec.group_of("scribe") == "scribe.cache-warming"


def test_the_flow_reads_world_events_in_a_group_of_its_own() -> None:
    assert WARMING.topics == (TOPIC,)
    assert WARMING.group_of("scribe") == "scribe.cache-warming"


class SlowWarmer(CacheWarmer):
    """Each world takes `seconds` of waiting, as on a busy loop; notes how many overlap."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.in_flight = self.most_in_flight = 0

    async def warm(self, world_id: str) -> str:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.in_flight -= 1
        return "warmed"


async def test_a_batchs_worlds_are_warmed_several_at_a_time_each_counted() -> None:
    warmer = SlowWarmer(0.1)
    worlds = [f"w{n}" for n in range(3 * WARM_CONCURRENCY)]
    warmed = warming("warmed")

    started = time.monotonic()
    await WarmingSink(warmer).write(worlds)
    took = time.monotonic() - started

    assert warming("warmed") == warmed + len(worlds)
    assert warmer.most_in_flight == WARM_CONCURRENCY
    # One at a time would take 4.8 s; three turns of 16 take 0.3 s.
    assert took < 1.5, f"{len(worlds)} worlds of 0.1 s each took {took:.2f} s"


@pytest.fixture
async def databases(database_url: str) -> AsyncIterator[Databases]:
    await migrate(database_url)
    pools = Databases(database_url)
    try:
        yield pools
    finally:
        await pools.close(2.0)


async def add_world(databases: Databases, world_id: str, state: dict[str, object]) -> None:
    pool = await databases.primary()
    await pool.execute(
        "INSERT INTO world_state (world_id, version, tick, state, state_hash) "
        "VALUES ($1, 3, 120, $2::jsonb, 'h-1')",
        world_id,
        orjson.dumps(state).decode(),
    )


async def test_the_flow_puts_the_loaded_worlds_hot_entries_into_redis(
    services: dict[str, str], databases: Databases, redis_client: aioredis.Redis
) -> None:
    w1, w2 = (f"warm-{uuid.uuid4().hex[:10]}" for _ in range(2))
    await add_world(databases, w1, {"weather": "rain"})
    cache = CacheClient(services["SCRIBE_REDIS_URL"], name="warming", l1=False)
    sink = WarmingSink(CacheWarmer(databases, cache, ttl=60))
    warmed, no_state, skipped = warming("warmed"), warming("no_state"), warming(BAD_INPUT)
    consumer = ListConsumer(records(TOPIC, batch_with_bad_records(w1, w2)))

    await run_flow(declare(CONFIG, sink), consumer)

    assert await redis_client.hexists(world_key(w1), "v")
    assert await redis_client.hexists(section_key(w1, "weather"), "v")
    assert await redis_client.exists(world_key(w2)) == 0
    assert (warming("warmed"), warming("no_state")) == (warmed + 1, no_state + 1)
    assert warming(BAD_INPUT) == skipped + 3
    assert consumer.committed == {TopicPartition(TOPIC, 0): 7}


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_redis_that_is_down_is_counted_failed_and_the_batch_committed(
    databases: Databases,
) -> None:
    w1, w2 = (f"warm-{uuid.uuid4().hex[:10]}" for _ in range(2))
    for world in (w1, w2):
        await add_world(databases, world, {"weather": "sun"})
    cache = CacheClient(f"redis://127.0.0.1:{unused_port()}/0", name="warming", l1=False)
    sink = WarmingSink(CacheWarmer(databases, cache, ttl=60))
    failed = warming("failed")
    consumer = ListConsumer(records(TOPIC, [loaded(w1), loaded(w2)]))

    runner = await run_flow(declare(CONFIG, sink), consumer, timeout=20)

    assert warming("failed") == failed + 2  # both tried, neither held the flow
    assert consumer.committed == {TopicPartition(TOPIC, 0): 2}
    assert not runner.paused
