"""Redis stopped for 10 s while invalidations keep coming, then started again on the same port:
every one of them is applied afterwards, none lost, none dead-lettered.

The embedded Redis keeps nothing across a restart, so the test snapshots the keys it expects
to be removed (SAVE) before stopping Redis; the restarted server loads them back, and the
pipeline must then remove every one. While Redis is down the flow must hold its partitions
rather than skip ahead: the CDN, which comes after Redis, sees none of these purges until
Redis is back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer, TopicPartition

from devkit.harness import read_until
from devkit.stack import LocalStack
from runtime.settings import kafka_bootstrap_servers
from schemas import encode
from schemas.events import CacheInvalidation
from tests.integration.invalidation.conftest import Pipeline
from tests.integration.invalidation.probes import (
    committed_through,
    eventually,
    invalidation_health,
    purged,
)
from topics.catalog import CACHE_INVALIDATIONS

pytestmark = [pytest.mark.integration, pytest.mark.faults]

OUTAGE_SECONDS = 10.0
INVALIDATIONS = 100


@pytest.fixture
def stack(services: dict[str, str], state_dir: Path) -> LocalStack:
    stack = LocalStack(state_dir / "stack")
    if not stack.is_running():
        pytest.skip("stops and starts Redis: needs the embedded stack, not SCRIBE_*_URL")
    return stack


async def test_invalidations_issued_while_redis_is_down_are_all_applied_after(
    stack: LocalStack, pipeline: Pipeline
) -> None:
    kafka_url, worker, cdn = pipeline.kafka_url, pipeline.worker, pipeline.cdn
    marker = uuid.uuid4().hex[:10]
    keys = [f"{marker}:k{i}" for i in range(INVALIDATIONS)]
    urls = [f"https://cdn.example/{marker}/{i}" for i in range(INVALIDATIONS)]
    before = aioredis.from_url(pipeline.redis_url)
    try:
        await before.mset(dict.fromkeys(keys, "stale"))
        await before.save()
        dump = Path(str((await before.config_get("dir"))["dir"])) / "dump.rdb"
    finally:
        await before.aclose()
    after = aioredis.from_url(pipeline.redis_url)

    async def flow_healthy() -> bool:
        return (await invalidation_health(worker))[0] == "healthy"

    # Run alone (`pytest -m faults`) this may be the worker's first test: the flow must have
    # reached Redis once before the outage, or it reports "starting", not "paused".
    assert await eventually(flow_healthy, timeout=60), worker.log_tail()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers(kafka_url), acks="all")
    await producer.start()
    last: dict[TopicPartition, int] = {}
    try:
        with stack.stopped("redis"):
            started = time.monotonic()
            for i, (key, url) in enumerate(zip(keys, urls, strict=True)):
                event = CacheInvalidation(
                    id=f"outage-{marker}-{i}",
                    keys=[key],
                    urls=[url],
                    reason="written while Redis was down",
                    occurred_at=datetime.now(UTC),
                )
                sent = await producer.send_and_wait(
                    CACHE_INVALIDATIONS.name, encode(event), key=CACHE_INVALIDATIONS.key_of(event)
                )
                tp = TopicPartition(sent.topic, sent.partition)
                last[tp] = max(last.get(tp, -1), sent.offset)
                await asyncio.sleep(OUTAGE_SECONDS * 0.8 / INVALIDATIONS)
            await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))
            assert await purged(cdn, marker) == [], "purges ran past a Redis that was down"
            assert await invalidation_health(worker) == (
                "degraded",
                "Redis is down: partitions paused",
            )
        restarted = time.monotonic()

        async def all_removed() -> bool:
            return int(await after.exists(*keys)) == 0

        # The snapshot came back with the restart: the keys are there until the flow removes them.
        assert await eventually(all_removed, timeout=60), worker.log_tail()
        print(f"\nredis outage: all {INVALIDATIONS} keys removed "
              f"{time.monotonic() - restarted:.1f} s after Redis came back")  # fmt: skip
        assert await committed_through(kafka_url, pipeline.group, last, timeout=60)

        async def all_purged() -> bool:
            return len(set(await purged(cdn, marker, "cloudflare", "url"))) == INVALIDATIONS

        assert await eventually(all_purged, timeout=60)
        dead = await read_until(
            kafka_url,
            CACHE_INVALIDATIONS.dlq_name,
            done=lambda _: False,
            match=lambda r: r.value is not None and marker.encode() in r.value,
            timeout=3,
        )
        assert dead == []
        assert (await invalidation_health(worker))[0] == "healthy"
        assert worker.alive()
    finally:
        await producer.stop()
        await after.aclose()
        dump.unlink(missing_ok=True)
