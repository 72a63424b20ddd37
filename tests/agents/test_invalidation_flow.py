"""The invalidation flows run in-process (runtime.testing): repeated targets coalesce into one
window, bad input is dead-lettered once (by the Redis flow), a Redis that pushes back holds the
partitions and the commit until it takes the window, and the CDN flow purges a window only once
the Redis flow's group has committed past it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from agents.invalidation.agent import health
from agents.invalidation.coalesce import Window
from agents.invalidation.config import InvalidationSettings
from agents.invalidation.delivery import AfterRedis
from agents.invalidation.flow import (
    NOTHING_TO_PURGE,
    declare,
    declare_cdn,
    decode_for_the_cdn,
    where_the_redis_flow_is,
)
from runtime.health import Status
from runtime.settings import SettingsError
from runtime.sink import SinkBackpressure
from runtime.source import Rejected
from runtime.testing import DeadLetterList, ListConsumer, ListSink, records, run_flow
from schemas import encode
from schemas.events import CacheInvalidation
from topics.catalog import CACHE_INVALIDATIONS
from topics.dlq import Origin

CONFIG = InvalidationSettings(window_seconds=0.05)
ORIGIN = Origin(CACHE_INVALIDATIONS.name, 0, 7, b"a", b"")


def invalidation(id_: str, **targets: list[str]) -> bytes:
    return encode(
        CacheInvalidation(id=id_, reason="test", occurred_at=datetime.now(UTC), **targets)
    )


VALUES = [
    invalidation("a", keys=["k1", "k2"], tags=["t"]),
    invalidation("b", keys=["k1"], urls=["https://cdn.example/1"]),
    b"not json",
    invalidation("c", keys=["k2"], tags=["t"], urls=["https://cdn.example/1"]),
]
PARTITION = TopicPartition(CACHE_INVALIDATIONS.name, 0)


async def test_repeated_targets_become_one_removal_and_bad_input_a_dead_letter() -> None:
    redis: ListSink[Window] = ListSink()
    dead = DeadLetterList()
    consumer = ListConsumer(records(CACHE_INVALIDATIONS.name, VALUES))

    await run_flow(declare(CONFIG, [redis], dead), consumer)

    (window,) = redis.batches
    assert window.keys == ["k1", "k2"]
    assert window.tags == ["t"]
    assert window.urls == []  # the CDN flow's
    assert (window.targets_in, window.targets_out) == (6, 3)
    assert [o.offset for o in window.targets[next(iter(window.targets))]] == [0, 1]
    assert [(d.record.offset, d.kind) for d in dead.letters] == [(2, "json")]
    assert consumer.committed == {PARTITION: 4}


async def test_the_cdn_flow_purges_once_the_redis_flow_committed_past_the_window() -> None:
    """Its first sink asks for the Redis flow's offsets until they pass the window's; the CDN
    sink comes after. The bad message is the Redis flow's to dead-letter, not a second time."""
    order: list[str] = []
    answers = [{}, {PARTITION: 3}, {PARTITION: 4}]

    async def redis_committed(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        assert partitions == [PARTITION]
        answer = answers.pop(0)
        order.append(f"redis at {answer.get(PARTITION)}")
        return answer

    class Cdn(ListSink[Window]):
        async def write(self, batch: Window) -> None:
            order.append(f"cdn {batch.urls} {batch.tags}")

    consumer = ListConsumer(records(CACHE_INVALIDATIONS.name, VALUES))
    gate = AfterRedis(redis_committed, poll_s=0.001)
    await run_flow(declare_cdn(CONFIG, [gate, Cdn()]), consumer)

    assert order == [
        "redis at None",
        "redis at 3",
        "redis at 4",
        "cdn ['https://cdn.example/1'] ['t']",
    ]
    assert consumer.committed == {PARTITION: 4}
    assert not gate.waiting


def test_the_cdn_flow_validates_only_what_has_a_url_or_a_tag() -> None:
    def read(value: bytes) -> CacheInvalidation | Rejected:
        return decode_for_the_cdn(records(CACHE_INVALIDATIONS.name, [value])[0])

    assert read(invalidation("a", keys=["k"])) is NOTHING_TO_PURGE
    assert isinstance(
        read(invalidation("b", keys=["k"], urls=["https://cdn.example/1"])), CacheInvalidation
    )
    assert isinstance(read(invalidation("c", tags=["t"])), CacheInvalidation)
    # Bad input is passed over here; the Redis flow dead-letters it.
    assert isinstance(read(b"not json"), Rejected)
    assert isinstance(read(b'{"id": "x", "urls": ["not a url"]}'), Rejected)


async def test_a_partition_the_cdn_group_never_committed_starts_where_the_redis_group_is() -> None:
    first, second, third = (TopicPartition(CACHE_INVALIDATIONS.name, p) for p in range(3))
    asked: list[list[TopicPartition]] = []

    async def own(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {first: 5}

    async def redis(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        asked.append(partitions)
        return {second: 9}  # `third`: the Redis group has no commit either

    starts = where_the_redis_flow_is(own, redis)
    assert await starts(frozenset({first, second, third})) == {second: 9}
    assert asked == [[second, third]]  # `first` goes on from its own commit


async def test_a_window_with_nothing_for_the_cdn_waits_for_nothing() -> None:
    async def redis_committed(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        raise AssertionError("asked for the Redis flow's offsets")

    window = Window()
    window.add(CacheInvalidation.model_validate_json(invalidation("a", keys=["k"])), ORIGIN)
    await AfterRedis(redis_committed).write(window)


def _running(*sinks: object, paused: bool = False) -> Any:
    """A flow runner as /health reads it."""
    return SimpleNamespace(in_hand=1, paused=paused, flow=SimpleNamespace(sinks=sinks))


async def test_a_redis_flow_that_stays_behind_is_pushed_back_on_until_it_passes() -> None:
    """After `wait_s` the gate pushes back (the runtime pauses the CDN flow and /health says
    why); offsets that cannot be read push back at once."""
    behind: dict[TopicPartition, int] = {PARTITION: 0}

    async def redis_committed(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return behind

    window = Window()
    window.add(CacheInvalidation.model_validate_json(invalidation("a", tags=["t"])), ORIGIN)
    gate = AfterRedis(redis_committed, poll_s=0.001, wait_s=0.01)
    redis, cdn = _running(), _running(gate, paused=True)
    with pytest.raises(SinkBackpressure, match="waiting for the Redis flow"):
        await gate.write(window)
    assert gate.waiting
    waiting = health(redis, cdn)
    assert waiting.status is Status.DEGRADED
    assert waiting.reason == "CDN purges wait for the Redis flow to commit past them"
    assert waiting.details["cdn_paused"] is True and waiting.details["paused"] is False
    behind[PARTITION] = ORIGIN.offset + 1
    await gate.write(window)
    assert not gate.waiting
    cdn.paused = False
    assert health(redis, cdn).status is Status.HEALTHY
    assert health(None, None).reason == "starting: waiting for Redis"

    async def unreadable(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        raise KafkaConnectionError("no broker")

    with pytest.raises(SinkBackpressure, match="offsets cannot be read"):
        await AfterRedis(unreadable).write(window)


async def test_a_redis_that_pushes_back_holds_the_commit() -> None:
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
            order.append(f"redis, committed={consumer.committed}")

    await run_flow(declare(CONFIG, [Redis()], DeadLetterList()), consumer)

    assert order == [
        "redis down, paused=False",
        "redis down, paused=True",
        "redis, committed={}",
    ]
    assert consumer.committed == {PARTITION: 1}
    assert not consumer.paused()


async def test_a_lone_invalidation_is_delivered_without_waiting_for_the_window() -> None:
    """Light load: the window (here 2 s, far beyond the 200 ms allowed, so a wait shows) is not
    waited out; with no busy rate it is."""
    for busy_per_second, delivered_within in ((10_000.0, 1.0), (0.0, 3.0)):
        redis: ListSink[Window] = ListSink()
        consumer = ListConsumer(records(CACHE_INVALIDATIONS.name, [invalidation("a", keys=["k"])]))
        config = InvalidationSettings(window_seconds=2.0, busy_per_second=busy_per_second)
        started = asyncio.get_running_loop().time()
        await run_flow(declare(config, [redis], DeadLetterList()), consumer)
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
