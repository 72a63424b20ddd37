"""Cache warming: a `world_loaded` world event puts the world's hot entries into Redis from
its world_state row, in the cache client's layout and under the world's tag.

world_state belongs to the world flow; this test creates the table in that flow's shape if
it is not there yet, and the rows it needs."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from agents.invalidation.hot_keys import section_key, world_key, world_tag
from cache import CacheClient
from cache.layout import tag_set_key
from devkit.harness import WorkerProcess
from schemas.events import WorldEvent
from schemas.examples import example
from tests.integration.invalidation.probes import eventually, metric
from topics.publisher import Publisher

pytestmark = pytest.mark.integration

WORLD_STATE = """
CREATE TABLE IF NOT EXISTS world_state (
    world_id text PRIMARY KEY,
    version bigint NOT NULL,
    tick bigint NOT NULL,
    state jsonb NOT NULL,
    state_hash text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""


async def _never(*_: Any) -> Any:
    raise AssertionError("warmed entries must come from Redis, not the loader")


async def test_world_loaded_warms_the_hot_keys(
    services: dict[str, str],
    worker: WorkerProcess,
    db: asyncpg.Connection,
    publisher: Publisher,
    redis_client: aioredis.Redis,
) -> None:
    world = f"warm-{uuid.uuid4().hex[:10]}"
    state = {"npcs": {"mira": {"hp": 3}}, "weather": "rain"}
    await db.execute(WORLD_STATE)
    await db.execute(
        "INSERT INTO world_state (world_id, version, tick, state, state_hash) "
        "VALUES ($1, 3, 120, $2::jsonb, 'h-1')",
        world,
        orjson.dumps(state).decode(),
    )
    warmed_before = await metric(worker.url, "scribe_cache_warming_total", outcome="warmed")
    await publisher.publish(example(WorldEvent, world_id=world, type="world_loaded", payload={}))

    async def warmed() -> bool:
        return bool(await redis_client.hexists(world_key(world), "v"))

    assert await eventually(warmed, timeout=60), worker.log_tail()
    async with CacheClient(services["SCRIBE_REDIS_URL"]) as app:
        document = await app.get(world_key(world), _never)
        assert (document["version"], document["tick"], document["state"]) == (3, 120, state)
        assert await app.get(section_key(world, "npcs"), _never) == state["npcs"]
        assert await app.get(section_key(world, "weather"), _never) == "rain"
    members = await redis_client.smembers(tag_set_key(world_tag(world)))
    assert members == {
        k.encode()
        for k in (world_key(world), section_key(world, "npcs"), section_key(world, "weather"))
    }
    assert 0 < await redis_client.pttl(world_key(world)) <= 300_000
    assert await metric(worker.url, "scribe_cache_warming_total", outcome="warmed") == (
        warmed_before + 1
    )


async def test_a_world_without_state_is_counted_not_warmed(
    worker: WorkerProcess,
    db: asyncpg.Connection,
    publisher: Publisher,
    redis_client: aioredis.Redis,
) -> None:
    world = f"nostate-{uuid.uuid4().hex[:10]}"
    await db.execute(WORLD_STATE)
    before = await metric(worker.url, "scribe_cache_warming_total", outcome="no_state")
    # An event the world flow takes as already applied (its id is on record), so it does not
    # create the world's state meanwhile.
    loaded = example(WorldEvent, world_id=world, type="world_loaded", payload={})
    await db.execute(
        "INSERT INTO world_event_ids (world_id, event_id, seq) VALUES ($1, $2, 1)",
        world,
        loaded.event_id,
    )
    await publisher.publish(loaded)

    async def counted() -> bool:
        return await metric(worker.url, "scribe_cache_warming_total", outcome="no_state") > before

    assert await eventually(counted, timeout=60), worker.log_tail()
    assert await redis_client.exists(world_key(world)) == 0
