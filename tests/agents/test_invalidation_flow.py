"""The invalidation flow run in-process (runtime.testing): repeated targets coalesce into one
window, bad input is dead-lettered, Redis comes before the CDN, and a Redis that pushes back
holds the partitions and the commit until it takes the window."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from aiokafka import TopicPartition

from agents.invalidation.coalesce import Window
from agents.invalidation.config import InvalidationSettings
from agents.invalidation.flow import declare
from runtime.settings import SettingsError
from runtime.sink import SinkBackpressure
from runtime.testing import DeadLetterList, ListConsumer, ListSink, records, run_flow
from schemas import encode
from schemas.events import CacheInvalidation
from topics.catalog import CACHE_INVALIDATIONS

CONFIG = InvalidationSettings(window_seconds=0.05)


def invalidation(id_: str, **targets: list[str]) -> bytes:
    return encode(
        CacheInvalidation(id=id_, reason="test", occurred_at=datetime.now(UTC), **targets)
    )


async def test_repeated_targets_become_one_removal_and_bad_input_a_dead_letter() -> None:
    values = [
        invalidation("a", keys=["k1", "k2"], tags=["t"]),
        invalidation("b", keys=["k1"], urls=["https://cdn.example/1"]),
        b"not json",
        invalidation("c", keys=["k2"], tags=["t"], urls=["https://cdn.example/1"]),
    ]
    redis: ListSink[Window] = ListSink()
    cdn: ListSink[Window] = ListSink()
    dead = DeadLetterList()
    consumer = ListConsumer(records(CACHE_INVALIDATIONS.name, values))

    await run_flow(declare(CONFIG, [redis, cdn], dead), consumer)

    assert len(redis.batches) == 1
    (window,) = redis.batches
    assert cdn.batches == [window]
    assert window.keys == ["k1", "k2"]
    assert window.tags == ["t"]
    assert window.urls == ["https://cdn.example/1"]
    assert (window.targets_in, window.targets_out) == (8, 4)
    assert [o.offset for o in window.targets[next(iter(window.targets))]] == [0, 1]
    assert [(d.record.offset, d.kind) for d in dead.letters] == [(2, "json")]
    assert consumer.committed == {TopicPartition(CACHE_INVALIDATIONS.name, 0): 4}


async def test_a_redis_that_pushes_back_holds_the_cdn_and_the_commit() -> None:
    order: list[str] = []
    refusals = 2
    consumer = ListConsumer(records(CACHE_INVALIDATIONS.name, [invalidation("a", keys=["k"])]))

    class Redis(ListSink[Window]):
        async def write(self, batch: Window) -> None:
            nonlocal refusals
            if refusals:
                refusals -= 1
                order.append(f"redis down, paused={bool(consumer.paused())}")
                raise SinkBackpressure(0.01, "Redis is down")
            order.append("redis")

    class Cdn(ListSink[Window]):
        async def write(self, batch: Window) -> None:
            order.append(f"cdn, committed={consumer.committed}")

    await run_flow(declare(CONFIG, [Redis(), Cdn()], DeadLetterList()), consumer)

    assert order == [
        "redis down, paused=False",
        "redis down, paused=True",
        "redis",
        "cdn, committed={}",
    ]
    assert consumer.committed == {TopicPartition(CACHE_INVALIDATIONS.name, 0): 1}
    assert not consumer.paused()


async def test_a_lone_invalidation_is_delivered_without_waiting_for_the_window() -> None:
    """Light load: the window (here 2 s, far beyond the 200 ms allowed, so a wait shows) is not
    waited out; with no busy rate it is."""
    for busy_per_second, delivered_within in ((10_000.0, 1.0), (0.0, 3.0)):
        redis: ListSink[Window] = ListSink()
        consumer = ListConsumer(records(CACHE_INVALIDATIONS.name, [invalidation("a", keys=["k"])]))
        config = InvalidationSettings(window_seconds=2.0, busy_per_second=busy_per_second)
        started = asyncio.get_running_loop().time()
        await run_flow(declare(config, [redis, ListSink()], DeadLetterList()), consumer)
        took = asyncio.get_running_loop().time() - started
        assert [w.keys for w in redis.batches] == [["k"]]
        assert took < delivered_within
        if busy_per_second == 0:
            assert took >= 2.0, "the fixed window is waited out"


def test_the_busy_rate_comes_from_the_environment_within_its_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCRIBE_INVALIDATION_BUSY_PER_S", "2500")
    assert InvalidationSettings.from_env().busy_per_second == 2500
    monkeypatch.setenv("SCRIBE_INVALIDATION_BUSY_PER_S", "-1")
    with pytest.raises(SettingsError, match="SCRIBE_INVALIDATION_BUSY_PER_S"):
        InvalidationSettings.from_env()
