"""The Redis sink on one server: keys, patterns, tags, the reserved tag-set namespace."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from cache.layout import tag_set_key
from sinks.redis import TAG_POP_CHUNK, UNLINK_CHUNK, RedisInvalidator

pytestmark = pytest.mark.integration


@pytest.fixture
async def invalidator(services: dict[str, str]) -> AsyncIterator[RedisInvalidator]:
    sink = await RedisInvalidator.connect(services["SCRIBE_REDIS_URL"])
    try:
        yield sink
    finally:
        await sink.close()


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def test_single_server_is_not_a_cluster(invalidator: RedisInvalidator) -> None:
    assert not invalidator.is_cluster


async def test_keys_in_chunks(
    invalidator: RedisInvalidator, redis_client: aioredis.Redis, prefix: str
) -> None:
    keys = [f"{prefix}:{i}" for i in range(UNLINK_CHUNK * 2 + 7)]
    await redis_client.mset(dict.fromkeys(keys, 1))
    applied = await invalidator.apply([*keys, f"{prefix}:absent", keys[0]], [], [])
    assert (applied.keys, applied.removed) == (len(keys) + 1, len(keys))
    assert await redis_client.exists(*keys) == 0


async def test_patterns_scan_and_never_touch_tag_sets(
    invalidator: RedisInvalidator, redis_client: aioredis.Redis, prefix: str
) -> None:
    doomed = [f"{prefix}:npc:{i}" for i in range(1500)]
    kept = [f"{prefix}:pc:1", f"{prefix}:npcs"]
    await redis_client.mset(dict.fromkeys([*doomed, *kept], 1))
    # A tag set whose name the pattern below also matches: bookkeeping, not a cached value.
    tag_set = tag_set_key(f"{prefix}:npc:x")
    await redis_client.sadd(tag_set, "member")
    applied = await invalidator.apply([], [f"{prefix}:npc:*", "cache:tag:*"], [])
    assert applied.removed == len(doomed)
    assert await redis_client.exists(*doomed) == 0
    assert await redis_client.exists(*kept) == len(kept)
    assert await redis_client.exists(tag_set) == 1


async def test_exact_keys_in_the_tag_set_namespace_are_skipped(
    invalidator: RedisInvalidator, redis_client: aioredis.Redis, prefix: str
) -> None:
    tag_set = tag_set_key(prefix)
    await redis_client.sadd(tag_set, "member")
    applied = await invalidator.apply([tag_set], [], [])
    assert (applied.keys, applied.skipped_reserved) == (0, 1)
    assert await redis_client.exists(tag_set) == 1


async def test_a_tag_with_more_members_than_a_chunk(
    invalidator: RedisInvalidator, redis_client: aioredis.Redis, prefix: str
) -> None:
    tag = f"{prefix}:big"
    members = [f"{prefix}:m{i}" for i in range(TAG_POP_CHUNK * 2 + 3)]
    await redis_client.mset(dict.fromkeys(members, 1))
    await redis_client.sadd(tag_set_key(tag), *members)
    small = f"{prefix}:small"
    await redis_client.set(f"{prefix}:s", 1)
    await redis_client.sadd(tag_set_key(small), f"{prefix}:s", f"{prefix}:gone-already")
    applied = await invalidator.apply([], [], [tag, small, f"{prefix}:no-such-tag"])
    assert (applied.tags, applied.removed) == (3, len(members) + 1)
    assert await redis_client.exists(*members, f"{prefix}:s") == 0
    assert await redis_client.exists(tag_set_key(tag), tag_set_key(small)) == 0
