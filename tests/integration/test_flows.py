"""Valid events flow through a real worker into PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal

import asyncpg
import pytest
import redis.asyncio as aioredis

from devkit.harness import WorkerProcess
from schemas.events import CacheInvalidation, UsageEvent
from schemas.examples import example
from topics.publisher import Publisher

pytestmark = pytest.mark.integration


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.25)


async def test_usage_is_summed_exactly_once_even_when_published_twice(
    worker: WorkerProcess, publisher: Publisher, db: asyncpg.Connection
) -> None:
    user = f"flow-{uuid.uuid4().hex[:8]}"
    events = [
        example(
            UsageEvent,
            user_id=user,
            cost_usd=Decimal(i).scaleb(-12) + Decimal("0.01"),
            input_tokens=i,
            output_tokens=2 * i,
        )
        for i in range(1, 201)
    ]
    await publisher.publish_many(events)
    await publisher.publish_many(events[:100])  # a producer retrying half of them

    expected_cost = sum((e.cost_usd or Decimal(0) for e in events), Decimal(0))

    async def all_stored() -> bool:
        count = await db.fetchval("SELECT count(*) FROM usage_events WHERE user_id = $1", user)
        return bool(count == len(events))

    await _eventually(all_stored)
    await asyncio.sleep(2)  # the duplicates, if they were counted, would have landed by now
    row = await db.fetchrow(
        "SELECT sum(requests) AS requests, sum(input_tokens) AS input_tokens, "
        "sum(output_tokens) AS output_tokens, sum(cost_usd) AS cost FROM usage_daily "
        "WHERE user_id = $1",
        user,
    )
    assert row is not None
    assert row["requests"] == 200
    assert row["input_tokens"] == sum(range(1, 201))
    assert row["output_tokens"] == 2 * sum(range(1, 201))
    assert row["cost"] == expected_cost
    monthly = await db.fetchval("SELECT sum(cost_usd) FROM usage_monthly WHERE user_id = $1", user)
    assert monthly == expected_cost


async def test_invalidation_removes_the_keys_from_redis(
    worker: WorkerProcess, publisher: Publisher, redis_client: aioredis.Redis
) -> None:
    world = f"w-{uuid.uuid4().hex[:8]}"
    doomed = [f"world:{world}", f"world:{world}:npc:1"]
    kept = f"world:{world}:unrelated"
    for key in (*doomed, kept):
        await redis_client.set(key, b"cached")
    await publisher.publish(example(CacheInvalidation, keys=doomed))

    async def gone() -> bool:
        return bool(await redis_client.exists(*doomed) == 0)

    await _eventually(gone)
    assert await redis_client.get(kept) == b"cached"
