"""The cache client against a real Redis: layers, single flight, leases, tags, the L1
broadcast and what happens when Redis or the subscription goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from cache import Broadcast, CacheClient
from cache.layout import tag_set_key
from cache.patterns import glob_matches
from devkit.stack.processes import free_port
from sinks.redis import RedisInvalidator

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[CacheClient]:
    async with CacheClient(redis_url) as cache:
        assert cache.l1_live
        yield cache


@pytest.fixture
async def invalidator(redis_url: str) -> AsyncIterator[RedisInvalidator]:
    sink = await RedisInvalidator.connect(redis_url)
    try:
        yield sink
    finally:
        await sink.close()


def counting(value: Any, delay: float = 0.0) -> tuple[Callable[[], Awaitable[Any]], list[int]]:
    calls: list[int] = []

    async def load() -> Any:
        calls.append(1)
        if delay:
            await asyncio.sleep(delay)
        return value

    return load, calls


async def test_miss_loads_once_then_l1_then_redis_for_another_process(
    client: CacheClient, redis_url: str, redis_client: aioredis.Redis, prefix: str
) -> None:
    key = f"{prefix}:world"
    load, calls = counting({"name": "Mira", "hp": 3})
    assert await client.get(key, load, ttl=60) == {"name": "Mira", "hp": 3}
    assert await client.get(key, load, ttl=60) == {"name": "Mira", "hp": 3}
    assert len(calls) == 1
    assert (client.stats.fills, client.stats.l1_hits) == (1, 1)
    assert await redis_client.hget(key, "v") == b'{"name":"Mira","hp":3}'
    assert 0 < await redis_client.pttl(key) <= 60_000
    async with CacheClient(redis_url) as other:
        assert await other.get(key, load) == {"name": "Mira", "hp": 3}
        assert other.stats.redis_hits == 1
    assert len(calls) == 1


async def test_concurrent_gets_share_one_load(client: CacheClient, prefix: str) -> None:
    load, calls = counting("v", delay=0.05)
    results = await asyncio.gather(*(client.get(f"{prefix}:k", load) for _ in range(20)))
    assert results == ["v"] * 20
    assert len(calls) == 1
    assert client.stats.joined_flights == 19


async def test_another_process_waits_for_the_lease_holder(redis_url: str, prefix: str) -> None:
    key = f"{prefix}:k"
    slow, slow_calls = counting("from-a", delay=0.1)
    fast, fast_calls = counting("from-b")
    async with CacheClient(redis_url) as a, CacheClient(redis_url, lease_wait=2.0) as b:
        first = asyncio.create_task(a.get(key, slow))
        await asyncio.sleep(0.02)  # a holds the lease now
        assert await b.get(key, fast) == "from-a"
        assert await first == "from-a"
    assert (len(slow_calls), len(fast_calls)) == (1, 0)
    # One miss that waited (however often it looked again), answered by Redis in the end.
    assert (b.stats.lease_waits, b.stats.lease_wait_timeouts, b.stats.redis_hits) == (1, 0, 1)


async def test_lease_wait_gives_up_and_loads_without_writing(
    redis_url: str, redis_client: aioredis.Redis, prefix: str
) -> None:
    key = f"{prefix}:k"
    await redis_client.hset(key, "l", "someone-elses-lease")
    async with CacheClient(redis_url, lease_wait=0.05) as cache:
        load, calls = counting("fresh")
        assert await cache.get(key, load) == "fresh"
        assert (cache.stats.lease_waits, cache.stats.lease_wait_timeouts) == (1, 1)
        assert cache.stats.misses == 1
        assert len(calls) == 1
    assert await redis_client.hget(key, "v") is None


async def test_invalidation_during_a_slow_load_refuses_its_write_back(
    client: CacheClient,
    invalidator: RedisInvalidator,
    redis_client: aioredis.Redis,
    prefix: str,
) -> None:
    """The stale-set race of "Scaling Memcache" 3.2.1: the loader read the old row, a write
    and its invalidation happen, then the loader tries to store the old row."""
    key = f"{prefix}:k"
    read_old = asyncio.Event()

    async def slow_old_loader() -> str:
        read_old.set()
        await asyncio.sleep(0.1)
        return "old"

    reader = asyncio.create_task(client.get(key, slow_old_loader))
    await read_old.wait()
    await invalidator.apply([key], [], [])
    assert await reader == "old"  # this caller started before the invalidation
    assert client.stats.fills_refused == 1
    assert await redis_client.exists(key) == 0
    load, _ = counting("new")
    assert await client.get(key, load) == "new"


async def test_tag_invalidation_removes_every_tagged_key(
    client: CacheClient,
    invalidator: RedisInvalidator,
    redis_client: aioredis.Redis,
    prefix: str,
) -> None:
    tag = f"{prefix}:world"
    keys = [f"{prefix}:a", f"{prefix}:b"]
    for key in keys:
        await client.get(key, counting(key)[0], tags=[tag])
    await client.get(f"{prefix}:untagged", counting("u")[0])
    members = await redis_client.smembers(tag_set_key(tag))
    assert members == {key.encode() for key in keys}
    applied = await invalidator.apply([], [], [tag])
    assert (applied.tags, applied.removed) == (1, 2)
    assert await redis_client.exists(*keys) == 0
    assert await redis_client.exists(tag_set_key(tag)) == 0
    assert await redis_client.exists(f"{prefix}:untagged") == 1


async def test_tag_invalidation_during_a_slow_load_refuses_its_write_back(
    client: CacheClient, invalidator: RedisInvalidator, redis_client: aioredis.Redis, prefix: str
) -> None:
    key, tag = f"{prefix}:k", f"{prefix}:tag"
    loading = asyncio.Event()

    async def slow() -> str:
        loading.set()
        await asyncio.sleep(0.1)
        return "old"

    reader = asyncio.create_task(client.get(key, slow, tags=[tag]))
    await loading.wait()
    await invalidator.apply([], [], [tag])
    await reader
    assert client.stats.fills_refused == 1
    assert await redis_client.exists(key) == 0


async def test_broadcast_drops_l1_and_reports_the_invalidation(
    client: CacheClient, invalidator: RedisInvalidator, prefix: str
) -> None:
    key = f"{prefix}:k"
    load, calls = counting("v")
    await client.get(key, load)
    await client.get(key, load)
    assert client.stats.l1_hits == 1
    await invalidator.apply([key], [], [])
    assert await invalidator.broadcast(Broadcast(keys=(key,), ids=("inv-1",))) >= 1
    assert await client.applied("inv-1", timeout=5)
    await client.get(key, load)
    assert len(calls) == 2
    assert await client.applied("inv-1", timeout=0)
    assert not await client.applied("inv-never", timeout=0.05)


async def test_a_load_in_flight_during_a_broadcast_is_neither_joined_nor_kept(
    client: CacheClient, invalidator: RedisInvalidator, prefix: str
) -> None:
    key = f"{prefix}:k"
    started = asyncio.Event()

    async def old() -> str:
        started.set()
        await asyncio.sleep(0.2)
        return "old"

    first = asyncio.create_task(client.get(key, old))
    await started.wait()
    await invalidator.apply([key], [], [])
    await invalidator.broadcast(Broadcast(keys=(key,), ids=("inv-flight",)))
    assert await client.applied("inv-flight", timeout=5)
    new, _ = counting("new")
    assert await client.get(key, new) == "new"  # a new load, not the old one in flight
    assert await first == "old"
    assert await client.get(key, new) == "new"


async def test_pattern_broadcast_uses_redis_glob_rules(
    client: CacheClient, invalidator: RedisInvalidator, redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = [f"{prefix}:npc:{name}" for name in ("a", "b", "c1", "z")]
    for key in keys:
        await client.get(key, counting(key)[0])
    pattern = f"{prefix}:npc:[a-b]"
    applied = await invalidator.apply([], [pattern], [])
    await invalidator.broadcast(Broadcast(patterns=(pattern,), ids=("inv-pattern",)))
    assert await client.applied("inv-pattern", timeout=5)
    remaining = {k for k in keys if await redis_client.exists(k)}
    assert remaining == {f"{prefix}:npc:c1", f"{prefix}:npc:z"}
    assert applied.removed == 2
    # What Redis kept, L1 kept: only those are served without a load.
    for key in keys:
        load, calls = counting("reloaded")
        await client.get(key, load)
        assert bool(calls) == (key not in remaining)


async def test_glob_matching_agrees_with_redis(redis_client: aioredis.Redis, prefix: str) -> None:
    suffixes = ["a", "b", "ab", "a*b", "[x]", "c-d", "x\\y", "?", "", "é", "A"]
    keys = [f"{prefix}:{s}" for s in suffixes]
    for key in keys:
        await redis_client.set(key, 1, ex=60)
    for pattern in ["*", "?", "a*", "*b", "[ab]", "[^a]", "[a-c]", "a\\*b", "\\[x\\]", "[A-Z]"]:
        full = f"{prefix}:{pattern}"
        by_redis = {k.decode() async for k in redis_client.scan_iter(match=full, count=1000)}
        by_python = {k for k in keys if glob_matches(full, k)}
        assert by_python == by_redis, pattern


async def test_a_lost_subscription_turns_l1_off_and_clears_it(
    client: CacheClient, redis_client: aioredis.Redis, prefix: str
) -> None:
    key = f"{prefix}:k"
    load, calls = counting("v")
    await client.get(key, load)
    subscriptions = client.stats.subscriptions
    await redis_client.client_kill_filter(_type="pubsub")
    for _ in range(100):
        if client.stats.subscriptions > subscriptions and client.l1_live:
            break
        await asyncio.sleep(0.05)
    assert client.stats.disconnects >= 1
    assert client.l1_live
    await client.get(key, load)  # L1 was cleared: this comes from Redis
    assert client.stats.redis_hits == 1
    assert len(calls) == 1


async def test_without_redis_the_loader_serves(prefix: str) -> None:
    cache = CacheClient(f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert not await cache.start(ready_timeout=0.3)
        load, calls = counting("from-source")
        assert await cache.get(f"{prefix}:k", load) == "from-source"
        assert await cache.get(f"{prefix}:k", load) == "from-source"
        assert len(calls) == 2
        assert cache.stats.redis_errors == 2
    finally:
        await cache.close()


async def test_prime_fills_what_is_missing_under_the_lease_guard(
    client: CacheClient, invalidator: RedisInvalidator, redis_client: aioredis.Redis, prefix: str
) -> None:
    cached, fresh, gone = f"{prefix}:cached", f"{prefix}:fresh", f"{prefix}:gone"
    await client.get(cached, counting("already")[0])

    async def load() -> dict[str, Any]:
        await invalidator.apply([gone], [], [])  # invalidated while the warmer read
        return {cached: "x", fresh: "f", gone: "g"}

    result = await client.prime([cached, fresh, gone], load, ttl=30, tags=[f"{prefix}:t"])
    assert (result.filled, result.refused, result.already_cached, result.busy) == (1, 1, 1, 0)
    assert await redis_client.hget(fresh, "v") == b'"f"'
    assert await redis_client.exists(gone) == 0


async def test_ttl_beyond_the_maximum_is_refused(client: CacheClient) -> None:
    with pytest.raises(ValueError, match="max_ttl"):
        await client.get("k", counting(1)[0], ttl=client.max_ttl + 1)
