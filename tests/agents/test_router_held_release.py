"""The held lane's release on a real Redis: the rate-gate tokens for the requests it releases
are taken in one script call, and it releases, in arrival order, as many requests as tokens
were granted, never taking more tokens than it releases. While Redis is down it says so at most
once a minute, however often it is polled, and says when Redis answers again."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from agents.router.keys import ACQUIRE, MINUTE_MS, Limit, TokenBuckets, Wait
from agents.router.lane_consumer import REDIS_DOWN_WARNING_EVERY_S, DeferredPlan, HeldRelease
from devkit.stack.processes import free_port
from runtime.source import Received, Record
from topics.catalog import AI_REQUESTS_HELD

pytestmark = pytest.mark.integration


def holding_behind(
    gate: TokenBuckets, clock: Callable[[], float] = time.monotonic
) -> HeldRelease[int]:
    plan = DeferredPlan(rate_gate=gate, offpeak=None, promote_before=timedelta(0), max_held=100)
    return HeldRelease("held", plan, lambda _: None, clock)


def hold(holding: HeldRelease[int], events: range) -> None:
    for n in events:
        holding.hold(Received(n, Record(AI_REQUESTS_HELD.name, 0, n, None, b"")))


def gate_of(client: aioredis.Redis, per_minute: int) -> TokenBuckets:
    return TokenBuckets(
        client, f"lane:{uuid.uuid4().hex}", ["held"], [Limit(per_minute, MINUTE_MS)]
    )


async def evalsha_calls(client: aioredis.Redis) -> int:
    calls: int = (await client.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
    return calls


async def test_releasing_held_requests_takes_their_tokens_in_one_script_call(
    redis_client: aioredis.Redis,
) -> None:
    holding = holding_behind(gate_of(redis_client, 100))
    hold(holding, range(12))
    # Loaded beforehand: a server's first call of a script is two (NOSCRIPT, then again).
    await redis_client.script_load(ACQUIRE)
    before = await evalsha_calls(redis_client)
    released = await holding.due(room=12)
    after = await evalsha_calls(redis_client)
    assert [r.event for r in released] == list(range(12))
    assert len(holding) == 0
    # One call. Other tests share the server, so the count is a bound: one per request is 12.
    assert after - before < 6


async def test_as_many_are_released_in_order_as_tokens_were_granted_and_no_more_are_taken(
    redis_client: aioredis.Redis,
) -> None:
    gate = gate_of(redis_client, 10)  # a token every 6 s: no refill within the test
    holding = holding_behind(gate)
    hold(holding, range(4))
    # Room for 10, but only 4 held: 4 tokens taken, not 10.
    assert [r.event for r in await holding.due(room=10)] == [0, 1, 2, 3]
    hold(holding, range(4, 12))
    # Room for 2 of the 8 held: the first 2, for 2 tokens.
    assert [r.event for r in await holding.due(room=2)] == [4, 5]
    # 6 of the 10 tokens taken: 4 left, so 4 of the 6 held go and the last 2 stay, in order.
    assert [r.event for r in await holding.due(room=6)] == [6, 7, 8, 9]
    assert len(holding) == 2
    assert await holding.due(room=6) == []
    assert isinstance(await gate.take(), Wait), "the 10 released took the 10 tokens"


def lines_saying(caplog: pytest.LogCaptureFixture, words: str) -> int:
    return sum(1 for r in caplog.records if words in r.getMessage())


async def test_an_outage_is_warned_at_most_once_a_minute_and_its_end_once(
    redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agents.router.lane_consumer")
    down, back = "holds its queue while Redis is down", "releases its queue again: Redis answers"
    # No retries inside the client: each poll's gate call fails at once.
    unreachable = aioredis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    now = 1000.0
    holding = holding_behind(gate_of(unreachable, 100), clock=lambda: now)
    hold(holding, range(3))
    try:
        for _ in range(50):  # polls a second apart: 50 s of outage
            assert await holding.due(room=3) == []
            now += 1.0
        assert lines_saying(caplog, down) == 1
        now += REDIS_DOWN_WARNING_EVERY_S
        assert await holding.due(room=3) == []
        assert lines_saying(caplog, down) == 2, "a minute on, the outage is warned again"
    finally:
        await unreachable.aclose()
    assert lines_saying(caplog, back) == 0

    # Redis answers: the queue goes, and the end of the outage is said once.
    holding.plan = replace(holding.plan, rate_gate=gate_of(redis_client, 100))
    assert [r.event for r in await holding.due(room=3)] == [0, 1, 2]
    hold(holding, range(3, 5))
    assert [r.event for r in await holding.due(room=3)] == [3, 4]
    assert lines_saying(caplog, back) == 1
    assert lines_saying(caplog, down) == 2
