"""The Redis token bucket: atomic under concurrency, refilled at its rate, capped at its burst."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from scribe.gateway.ratelimit import KEY_PREFIX, Decision, TokenBucket


@pytest.mark.integration
async def test_concurrent_takes_never_spend_more_than_the_burst(
    redis_client: aioredis.Redis, services: dict[str, str]
) -> None:
    client = f"c-{uuid.uuid4().hex[:8]}"
    other = aioredis.from_url(services["SCRIBE_REDIS_URL"])  # a second "process"
    try:
        buckets = [TokenBucket(redis_client, rate=0.01, burst=20), TokenBucket(other, 0.01, 20)]
        decisions = await asyncio.gather(*(buckets[i % 2].take(client, 1) for i in range(60)))
    finally:
        await other.aclose()
    assert sum(d.allowed for d in decisions) == 20
    refused = [d for d in decisions if not d.allowed]
    assert all(d.wait_ms > 90_000 for d in refused)  # one token at 0.01/s takes ~100 s
    assert await redis_client.pttl(KEY_PREFIX + client) > 0, "idle buckets expire"


@pytest.mark.integration
async def test_the_bucket_refills_at_its_rate_up_to_its_burst(redis_client: aioredis.Redis) -> None:
    client = f"c-{uuid.uuid4().hex[:8]}"
    bucket = TokenBucket(redis_client, rate=100, burst=10)
    assert (await bucket.take(client, 10)).allowed
    refused = await bucket.take(client, 5)
    assert not refused.allowed and 0 < refused.wait_ms <= 50
    await asyncio.sleep(0.06)
    assert (await bucket.take(client, 5)).allowed
    await asyncio.sleep(0.3)  # would be 30 tokens, but the bucket holds 10
    assert (await bucket.take(client, 10)).allowed
    assert not (await bucket.take(client, 1)).allowed


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert Decision(False, 1, 0).retry_after_s == 1
    assert Decision(False, 1001, 0).retry_after_s == 2


@pytest.mark.integration
async def test_a_cost_above_the_burst_is_a_programming_error(redis_client: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="can never fit"):
        await TokenBucket(redis_client, rate=1, burst=5).take("c", 6)
