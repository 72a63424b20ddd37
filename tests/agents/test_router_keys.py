"""Key pools on a real Redis: limits hold across workers (two pools, two connections),
429 cool-downs, the most headroom first, waiting instead of failing."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from agents.router.keys import KeyPool, Limit, ProviderKey, TokenBuckets, Wait

pytestmark = pytest.mark.integration


def secrets(n: int) -> tuple[str, ...]:
    run = uuid.uuid4().hex[:8]
    return tuple(f"test-key-{run}-{i}" for i in range(n))


@pytest.fixture
async def second_client(services: dict[str, str]) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(services["SCRIBE_REDIS_URL"])
    yield client
    await client.aclose()


async def test_per_minute_limit_holds_across_two_workers(
    redis_client: aioredis.Redis, second_client: aioredis.Redis
) -> None:
    keys = secrets(2)
    pools = [KeyPool(c, "openrouter", keys, 5, 1000) for c in (redis_client, second_client)]
    taken = await asyncio.gather(*(pools[i % 2].acquire() for i in range(40)))
    granted = [t for t in taken if isinstance(t, ProviderKey)]
    assert len(granted) == 10, "2 keys x 5 per minute, whichever worker asks"
    assert Counter(k.id for k in granted) == {k: 5 for k in pools[0].keys}
    waits = [t for t in taken if isinstance(t, Wait)]
    assert waits and all(0 < w.seconds <= 12.1 for w in waits), "a token every 12 s"


async def test_per_day_limit_counts_too(redis_client: aioredis.Redis) -> None:
    pool = KeyPool(redis_client, "gemini", secrets(1), 1000, 3)
    taken = [await pool.acquire() for _ in range(4)]
    assert [isinstance(t, ProviderKey) for t in taken] == [True, True, True, False]


async def test_the_key_with_most_headroom_is_chosen(redis_client: aioredis.Redis) -> None:
    pool = KeyPool(redis_client, "gemini", secrets(3), 10, 1000)
    first = [await pool.acquire() for _ in range(3)]
    assert len({k.id for k in first if isinstance(k, ProviderKey)}) == 3, "spread, not piled"


async def test_a_cooled_key_rests_then_returns(redis_client: aioredis.Redis) -> None:
    pool = KeyPool(redis_client, "openrouter", secrets(2), 100_000, 1_000_000)
    resting = next(iter(pool.keys.values()))
    await pool.cool(resting, 0.6)
    during = [await pool.acquire() for _ in range(20)]
    assert all(isinstance(k, ProviderKey) and k.id != resting.id for k in during)
    await asyncio.sleep(0.7)
    after = [await pool.acquire() for _ in range(20)]
    assert any(isinstance(k, ProviderKey) and k.id == resting.id for k in after)


async def test_when_every_key_rests_the_wait_is_the_shortest_cool_down(
    redis_client: aioredis.Redis,
) -> None:
    pool = KeyPool(redis_client, "openrouter", secrets(2), 100_000, 1_000_000)
    one, two = pool.keys.values()
    await pool.cool(one, 5)
    await pool.cool(two, 1)
    await pool.cool(two, 0.2)  # a shorter cool-down never shortens a longer one
    taken = await pool.acquire()
    assert isinstance(taken, Wait) and 0.8 < taken.seconds <= 1.0


async def test_a_rate_gate_releases_at_its_rate(redis_client: aioredis.Redis) -> None:
    gate = TokenBuckets(redis_client, f"lane:{uuid.uuid4().hex}", ["lane"], [Limit(5, 1000)])
    granted = [await gate.acquire() for _ in range(8)]
    assert granted.count("lane") == 5
    await asyncio.sleep(0.45)
    assert await gate.acquire() == "lane", "5 per second: one more after 200 ms"


async def test_each_use_shows_the_share_of_the_keys_limits_used(
    redis_client: aioredis.Redis,
) -> None:
    pool = KeyPool(redis_client, "gemini", secrets(1), 10, 1000)
    for _ in range(3):
        taken = await pool.acquire()
    assert isinstance(taken, ProviderKey)

    def used(window: str) -> float | None:
        labels = {"provider": "gemini", "key_id": taken.id, "window": window}
        return REGISTRY.get_sample_value("scribe_provider_key_quota_used_ratio", labels)

    # Refill runs on the clock between calls: a few thousandths of a token at most.
    assert used("minute") == pytest.approx(0.3, abs=0.01)
    assert used("day") == pytest.approx(0.003, abs=0.0001)


async def test_takes_asked_together_spread_and_count_as_one_by_one(
    redis_client: aioredis.Redis,
) -> None:
    """Concurrent takes go to Redis in one script; each still picks the key with the most
    headroom after the takes before it, and never takes a token that is not there."""
    pool = KeyPool(redis_client, "gemini", secrets(3), 4, 1000)
    before = (await redis_client.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
    taken = await asyncio.gather(*(pool.acquire() for _ in range(14)))
    after = (await redis_client.info("commandstats"))["cmdstat_evalsha"]["calls"]
    granted = [t.id for t in taken if isinstance(t, ProviderKey)]
    assert Counter(granted[:3]) == {k: 1 for k in pool.keys}, "the first three spread"
    assert Counter(granted) == {k: 4 for k in pool.keys}, "3 keys x 4 per minute"
    assert all(isinstance(t, Wait) for t in taken[12:])
    # Other tests share the server, so the count is a bound: far fewer than one per take.
    assert after - before < 7
