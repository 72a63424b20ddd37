"""Done marks on a real Redis: concurrent marks and look-ups go together and each caller gets
its own answer; a mark lasts the idempotency window."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from agents.router.lane_consumer import DoneMarks

pytestmark = pytest.mark.integration


async def test_concurrent_marks_and_look_ups_each_get_their_own_answer(
    redis_client: aioredis.Redis,
) -> None:
    marks = DoneMarks(redis_client, window_s=60)
    run = uuid.uuid4().hex[:8]
    marked = [f"req-{run}-{n}" for n in range(50)]
    never = [f"req-{run}-never-{n}" for n in range(10)]
    await asyncio.gather(*(marks.mark(r) for r in marked))
    found = await asyncio.gather(*(marks.done(r) for r in [*never, *marked]))
    assert found == [False] * 10 + [True] * 50
    ttl = await redis_client.ttl(f"router:done:{marked[-1]}")
    assert 55 <= ttl <= 60
