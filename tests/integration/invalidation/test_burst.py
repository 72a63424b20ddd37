"""A burst of 10,000 invalidations over 1,000 targets, each target ten times, through the
running worker: at most 1,100 purges at each sink.

How the repeats fall in time matters, so it is stated here: the burst models 100 groups of
ten hot entities, each entity written ten times in quick succession; within a group the 100
invalidations are shuffled, and the groups follow each other. All 10,000 are published at
once (one produce batch per partition, keyed by entity as the topic is), so they reach the
broker within about a window. A target's ten invalidations are at most 100 messages apart, so
a window boundary splits at most ten targets. (`bench/invalidation_latency.py` also measures
repeats shuffled over the whole burst, and a burst spread over a second.)
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from agents.invalidation.flow import CDN_INVALIDATION
from cache.layout import tag_set_key
from schemas.events import CacheInvalidation
from tests.integration.invalidation.conftest import Pipeline
from tests.integration.invalidation.probes import committed_through, metric, purged
from topics.catalog import CACHE_INVALIDATIONS
from topics.publisher import Publisher

pytestmark = pytest.mark.integration

TARGETS = 1000
REPEATS = 10
GROUP = 10
MAX_PURGES = 1100


def burst_order(targets: list[str], rng: random.Random) -> list[str]:
    order: list[str] = []
    for start in range(0, len(targets), GROUP):
        group = [t for t in targets[start : start + GROUP] for _ in range(REPEATS)]
        rng.shuffle(group)
        order.extend(group)
    return order


async def test_a_burst_with_tenfold_repeats_needs_at_most_1100_purges_per_sink(
    pipeline: Pipeline, redis_client: aioredis.Redis, publisher: Publisher
) -> None:
    kafka_url, worker, group, cdn = (
        pipeline.kafka_url,
        pipeline.worker,
        pipeline.group,
        pipeline.cdn,
    )
    marker = uuid.uuid4().hex[:10]
    tags = [f"burst-{marker}-{i}" for i in range(TARGETS)]
    # Each tag guards one cached key, so Redis shows every tag was really applied.
    for tag in tags:
        await redis_client.set(f"{tag}:value", 1)
        await redis_client.sadd(tag_set_key(tag), f"{tag}:value")
    before_redis = await metric(worker.url, "scribe_invalidations_total", sink="redis", kind="tag")
    now = datetime.now(UTC)
    # Keyed by the entity that changed (the topic's key), so an entity's invalidations stay
    # in one partition, in order.
    events = [
        CacheInvalidation(id=f"entity-{tag}", tags=[tag], reason="burst", occurred_at=now)
        for tag in burst_order(tags, random.Random(7))
    ]
    assert len(events) == TARGETS * REPEATS

    # The consumer must be live first: a burst that waits in the topic while the consumer
    # joins its group would be read in one go and say nothing about the window.
    probe = CacheInvalidation(id=f"probe-{marker}", keys=[marker], reason="probe", occurred_at=now)
    ready = await publisher.publish_burst([probe], CACHE_INVALIDATIONS)
    assert await committed_through(kafka_url, group, ready, timeout=90)
    started = time.monotonic()
    last = await publisher.publish_burst(events, CACHE_INVALIDATIONS)
    published_in = time.monotonic() - started
    assert await committed_through(kafka_url, group, last, timeout=120), worker.log_tail()
    # The CDN purges in a group of its own, behind the Redis flow's.
    cdn_group = CDN_INVALIDATION.group_of(worker.app_id)
    assert await committed_through(kafka_url, cdn_group, last, timeout=120), worker.log_tail()
    redis_purges = (
        await metric(worker.url, "scribe_invalidations_total", sink="redis", kind="tag")
        - before_redis
    )
    fastly = await purged(cdn, f"burst-{marker}-", "fastly", "tag")
    cloudflare = await purged(cdn, f"burst-{marker}-", "cloudflare", "tag")
    print(
        f"\nburst: {len(events):,} invalidations over {TARGETS:,} targets, published in "
        f"{published_in * 1000:.0f} ms -> purges: "
        f"redis {redis_purges:,.0f} (ratio {len(events) / redis_purges:.2f}), "
        f"fastly {len(fastly):,} (ratio {len(events) / len(fastly):.2f}), "
        f"cloudflare {len(cloudflare):,} (ratio {len(events) / len(cloudflare):.2f})"
    )
    assert await redis_client.exists(*(f"{tag}:value" for tag in tags)) == 0
    assert set(fastly) == set(cloudflare) == set(tags)
    assert TARGETS <= redis_purges <= MAX_PURGES
    assert len(fastly) <= MAX_PURGES
    assert len(cloudflare) <= MAX_PURGES
