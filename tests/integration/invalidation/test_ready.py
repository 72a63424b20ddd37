"""A worker that answers /ready applies an invalidation published right after within a few
seconds: /ready waits until its flows have joined their consumer groups (a new group's join
takes seconds on its own; a worker used to answer ready before it)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from devkit.harness import WorkerProcess, new_worker
from schemas.events import CacheInvalidation
from topics.catalog import CACHE_INVALIDATIONS
from topics.publisher import Publisher

pytestmark = pytest.mark.integration

READY_WITHIN_S = 60.0
APPLIED_WITHIN_S = 3.0


async def ready(worker: WorkerProcess, within: float) -> dict[str, object]:
    """Polls /ready until it answers 200; returns the last body that said not ready (for the
    reason) or the ready one."""
    seen: dict[str, object] = {}
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            response = await http.get(f"{worker.url}/ready")
            if response.status_code == 200:
                return response.json()  # type: ignore[no-any-return]
            seen = response.json()
            await asyncio.sleep(0.05)
    raise AssertionError(f"not ready within {within:.0f} s: {seen}\n{worker.log_tail()}")


async def test_an_invalidation_published_right_after_ready_is_applied_within_seconds(
    services: dict[str, str],
    state_dir: Path,
    redis_client: aioredis.Redis,
    publisher: Publisher,
) -> None:
    worker = new_worker(services, state_dir / "ready-workers")
    try:
        worker.start()
        await ready(worker, READY_WITHIN_S)
        key = f"ready:{uuid.uuid4().hex[:10]}"
        await redis_client.set(key, 1)
        event = CacheInvalidation(
            id=f"ready-{key}", keys=[key], reason="ready", occurred_at=datetime.now(UTC)
        )
        published = time.monotonic()
        await publisher.publish_burst([event], CACHE_INVALIDATIONS)
        while await redis_client.exists(key):
            assert time.monotonic() - published < APPLIED_WITHIN_S, (
                f"{key} still in Redis {APPLIED_WITHIN_S:.0f} s after it was published to a "
                f"ready worker\n{worker.log_tail()}"
            )
            await asyncio.sleep(0.02)
        print(f"\napplied {time.monotonic() - published:.2f} s after publishing")
    finally:
        worker.stop()
