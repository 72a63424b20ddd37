"""One invalidation through the running worker: Redis (keys, patterns, tags), every L1, both
CDN APIs; and a CDN that stays down: Redis removals go on, and a dead letter comes only after
the retry deadline, which `scribe dlq replay` brings back."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import TopicPartition

from agents.invalidation.flow import CDN_INVALIDATION
from cache import CacheClient
from cache.layout import tag_set_key
from devkit.harness import read_until
from runtime.settings import kafka_bootstrap_servers
from schemas import encode
from schemas.events import CacheInvalidation
from tests.conftest import CDN_RETRY_DEADLINE_S
from tests.integration.invalidation.conftest import Pipeline
from tests.integration.invalidation.probes import (
    committed_through,
    eventually,
    invalidation_health,
    purged,
)
from topics.catalog import CACHE_INVALIDATIONS
from topics.dlq import H_ERROR, H_ERROR_KIND

pytestmark = pytest.mark.integration


def invalidation(**targets: Any) -> CacheInvalidation:
    return CacheInvalidation(
        id=f"inv-{uuid.uuid4().hex[:12]}",
        reason="integration test",
        occurred_at=datetime.now(UTC),
        **targets,
    )


async def _send(kafka_url: str, event: CacheInvalidation) -> dict[TopicPartition, int]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers(kafka_url), acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            CACHE_INVALIDATIONS.name, encode(event), key=CACHE_INVALIDATIONS.key_of(event)
        )
    finally:
        await producer.stop()
    return {TopicPartition(sent.topic, sent.partition): sent.offset}


async def test_one_invalidation_reaches_redis_every_l1_and_both_cdns(
    pipeline: Pipeline, redis_client: aioredis.Redis
) -> None:
    kafka_url, worker, cdn = pipeline.kafka_url, pipeline.worker, pipeline.cdn
    marker = uuid.uuid4().hex[:10]
    exact, patterned, tagged = f"{marker}:exact", f"{marker}:p:1", f"{marker}:tagged"
    kept = f"{marker}:kept"
    tag = f"{marker}-tag"
    url = f"https://cdn.example/{marker}/page?lang=en"
    loads: list[str] = []

    def loader(key: str, value: str) -> Any:
        async def load() -> str:
            loads.append(key)
            return value

        return load

    async with CacheClient(pipeline.redis_url) as app:
        for key in (exact, patterned, kept):
            await app.get(key, loader(key, "old"))
        await app.get(tagged, loader(tagged, "old"), tags=[tag])
        assert await redis_client.exists(exact, patterned, tagged, kept) == 4

        event = invalidation(keys=[exact], patterns=[f"{marker}:p:*"], tags=[tag], urls=[url])
        last = await _send(kafka_url, event)
        assert await app.applied(event.id, timeout=90), worker.log_tail()

        assert await redis_client.exists(exact, patterned, tagged) == 0
        assert await redis_client.exists(kept, tag_set_key(tag)) == 1 + 0
        loads.clear()
        for key in (exact, patterned, tagged, kept):
            assert await app.get(key, loader(key, "new"), tags=[tag] if key == tagged else ())
        assert sorted(loads) == sorted([exact, patterned, tagged])  # `kept` still in L1

    async def cdn_done() -> bool:
        return len(await purged(cdn, marker)) == 4

    assert await eventually(cdn_done, timeout=30)
    assert await purged(cdn, marker, "fastly", "url") == [url.removeprefix("https://")]
    assert await purged(cdn, marker, "cloudflare", "url") == [url]
    assert await purged(cdn, marker, "fastly", "tag") == [tag]
    assert await purged(cdn, marker, "cloudflare", "tag") == [tag]
    assert await committed_through(kafka_url, pipeline.group, last, timeout=30)


async def test_a_cdn_that_stays_down_dead_letters_the_message_only_after_the_deadline(
    pipeline: Pipeline,
    redis_client: aioredis.Redis,
    services: dict[str, str],
    state_dir: Path,
) -> None:
    """The shared worker's retry deadline is short (`CDN_RETRY_DEADLINE_S`, tests/conftest.py):
    the purge is retried with backoff, /health says degraded naming the CDN, the dead letter
    comes only once the deadline has passed, and `scribe dlq replay` brings it back."""
    kafka_url, worker, cdn = pipeline.kafka_url, pipeline.worker, pipeline.cdn
    cdn_group = CDN_INVALIDATION.group_of(worker.app_id)
    marker = uuid.uuid4().hex[:10]
    key, url = f"{marker}:k", f"https://cdn.example/{marker}"
    await redis_client.set(key, "stale")
    await cdn.post("/_sim/faults", json={"provider": "*", "status": 503, "count": 10_000})
    failing_since = datetime.now(UTC)
    event = invalidation(keys=[key], urls=[url])
    sent_at = time.monotonic()
    last = await _send(kafka_url, event)

    async def degraded_by_the_cdn() -> bool:
        status, reason = await invalidation_health(worker)
        return status == "degraded" and "CDN purges failing" in reason

    assert await eventually(degraded_by_the_cdn, timeout=30), worker.log_tail()
    # The CDN flow has a consumer group of its own: the Redis removal is not held behind the
    # purges it retries, and the Redis flow's offset moved on.
    assert await redis_client.exists(key) == 0
    assert await committed_through(kafka_url, pipeline.group, last, timeout=5)
    assert not await committed_through(kafka_url, cdn_group, last, timeout=1)
    dead = await read_until(
        kafka_url,
        CACHE_INVALIDATIONS.dlq_name,
        done=lambda kept: len(kept) >= 1,
        match=lambda r: r.value is not None and event.id.encode() in r.value,
        timeout=90,
    )
    dead_after = time.monotonic() - sent_at
    await cdn.delete("/_sim/faults")
    assert len(dead) == 1, worker.log_tail()
    assert dead_after >= CDN_RETRY_DEADLINE_S, f"dead-lettered after {dead_after:.1f} s"
    (letter,) = dead
    assert letter.headers[H_ERROR_KIND] == b"undeliverable"
    reason = letter.headers[H_ERROR].decode()
    assert "cdn fastly" in reason
    assert "cdn cloudflare" in reason
    assert "503" in reason
    assert f"past the retry deadline (SCRIBE_CDN_RETRY_DEADLINE_S={CDN_RETRY_DEADLINE_S})" in reason
    # The CDN flow's offset moved on once the message was dead-lettered.
    assert await committed_through(kafka_url, cdn_group, last, timeout=30)
    calls = (await cdn.get("/_sim/requests", params={"contains": marker})).json()["calls"]
    for provider in ("fastly", "cloudflare"):
        # Backoff from 0.2 s: several attempts within the deadline, none of them a success.
        statuses = [c["status"] for c in calls if c["provider"] == provider]
        assert len(statuses) >= 4 and set(statuses) == {503}, (provider, statuses)
    print(f"\ncdn down: dead-lettered {dead_after:.1f} s after sending "
          f"(deadline {CDN_RETRY_DEADLINE_S} s), {len(calls)} purge calls")  # fmt: skip

    # The CDN is back: replaying the dead letter purges the URL.
    since = failing_since.isoformat(timespec="seconds")
    replay = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "scribe", "dlq", "replay", CACHE_INVALIDATIONS.name),
        *("--kind", "undeliverable", "--since", since),
        env={**os.environ, **services, "SCRIBE_STATE_DIR": str(state_dir)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(replay.communicate(), 120)
    assert replay.returncode == 0, output.decode()

    async def replayed_and_purged() -> bool:
        return url in await purged(cdn, marker, "cloudflare", "url")

    assert await eventually(replayed_and_purged, timeout=60), worker.log_tail()
    assert worker.alive()
