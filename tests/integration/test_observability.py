"""The worker's observability on the embedded stack: /metrics carries every family the flows on
this branch feed; with Redis stopped /health turns degraded, the invalidation sink retries and
the blocked partition's lag equals what the broker says; with Redis back all returns to healthy
and the lag drains."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from agents import consumer_group
from devkit.harness import WorkerProcess, group_offsets, new_worker
from devkit.stack.processes import ProcessRecord, free_port
from devkit.stack.services import Redis
from runtime.settings import kafka_bootstrap_servers
from schemas import encode
from schemas.events import CacheInvalidation, UsageEvent
from schemas.examples import example
from topics.catalog import CACHE_INVALIDATIONS, USAGE_EVENTS
from topics.publisher import Publisher

pytestmark = pytest.mark.integration

T = TypeVar("T")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _samples(worker: WorkerProcess) -> Samples:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{worker.url}/metrics")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _total(samples: Samples, name: str, **labels: str) -> float | None:
    """Sum of the samples named `name` whose labels include `labels`; None if there are none."""
    values = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    return sum(values) if values else None


async def _eventually(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None:
            return value
        assert time.monotonic() < deadline, f"not reached within {timeout:.0f} s: {what}"
        await asyncio.sleep(0.5)


async def _health(worker: WorkerProcess, page: str = "health") -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{worker.url}/{page}")
    return response.status_code, response.json()


# Families with data on this branch; the router, world and budget flows feed the others.
FED_HERE = (
    "scribe_messages_in_total",
    "scribe_messages_out_total",
    "scribe_dead_letters_total",
    "scribe_processing_seconds_count",
    "scribe_end_to_end_seconds_count",
    "scribe_sink_batch_size_count",
    "scribe_sink_write_seconds_count",
    "scribe_invalidations_total",
    "scribe_coalesce_targets_total",
    "scribe_cost_today_usd",
    "scribe_cost_month_to_date_usd",
)


async def test_metrics_carry_every_family_fed_on_this_branch(
    worker: WorkerProcess, publisher: Publisher, kafka_url: str
) -> None:
    run = uuid.uuid4().hex[:8]
    await publisher.publish(example(UsageEvent, user_id=f"metrics-{run}", cost_usd=Decimal("0.25")))
    await publisher.publish(example(CacheInvalidation, keys=[f"m:{run}", f"m:{run}"]))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers(kafka_url))
    await producer.start()
    try:
        await producer.send_and_wait(USAGE_EVENTS.name, b"not json", key=run.encode())
    finally:
        await producer.stop()

    async def all_non_zero() -> Samples | None:
        samples = await _samples(worker)
        fed = all((_total(samples, name) or 0) > 0 for name in FED_HERE)
        return (
            samples if fed and _total(samples, "scribe_consumer_lag_messages") is not None else None
        )

    samples = await _eventually("every family fed", all_non_zero, timeout=30)
    assert (
        _total(samples, "scribe_messages_in_total", topic="usage.events", agent="usage") or 0
    ) > 0
    assert _total(samples, "scribe_dead_letters_total", agent="usage", kind="json")
    assert _total(samples, "scribe_messages_out_total", topic="usage.events.dlq", agent="usage")
    assert _total(samples, "scribe_end_to_end_seconds_count", agent="invalidation", sink="redis")
    assert _total(samples, "scribe_health_status", component="redis") == 0  # healthy


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[Redis, int, list[ProcessRecord]]]:
    """A Redis only this test's worker uses, so stopping it disturbs no other test."""
    service = Redis(tmp_path)
    port = free_port()
    records = [service.start(port)]
    service.wait_ready(records[0], port)
    try:
        yield service, port, records
    finally:
        for record in records:
            service.stop(record, port)


async def _committed(kafka_url: str, group: str, tp: TopicPartition) -> int | None:
    async with group_offsets(kafka_url, group) as consumer:
        offset = await consumer.committed(tp)
        return None if offset is None else int(offset)


async def test_redis_outage_degrades_health_grows_lag_exactly_and_recovers(
    services: dict[str, str],
    state_dir: Path,
    kafka_url: str,
    own_redis: tuple[Redis, int, list[ProcessRecord]],
) -> None:
    redis_service, redis_port, records = own_redis
    env = {**services, "SCRIBE_REDIS_URL": redis_service.url(redis_port)}
    worker = new_worker(env, state_dir / "outage-worker").start()
    try:
        await _outage(worker, kafka_url, redis_service, redis_port, records)
    finally:
        worker.stop()


def _assert_only_redis_is_down(body: dict[str, Any]) -> None:
    for component in body["components"]:
        if component["name"] == "invalidation" and component["status"] != "healthy":
            # Once its Redis write fails, the invalidation consumer holds its partitions.
            assert "paused" in component["reason"], component
        elif component["name"] != "redis":
            assert component["status"] == "healthy", component


async def _outage(
    worker: WorkerProcess,
    kafka_url: str,
    redis_service: Redis,
    redis_port: int,
    records: list[ProcessRecord],
) -> None:
    topic = CACHE_INVALIDATIONS.name

    async def healthy() -> bool | None:
        # Components may report `starting` for a moment after the worker is ready.
        code, body = await _health(worker)
        return True if code == 200 and body["overall_status"] == "healthy" else None

    await _eventually("a healthy worker before the outage", healthy, timeout=30)

    async def caught_up() -> bool | None:
        # A new group reads the topic from the start; wait until it has committed all of it.
        samples = await _samples(worker)
        lag = _total(samples, "scribe_consumer_lag_messages", topic=topic)
        return True if lag == 0 else None

    await _eventually("the new worker caught up", caught_up, timeout=60)

    redis_service.stop(records[0], redis_port)

    async def degraded() -> dict[str, Any] | None:
        code, body = await _health(worker)
        return body if code == 200 and body["overall_status"] == "degraded" else None

    body = await _eventually("/health degraded", degraded, timeout=15)
    redis = next(c for c in body["components"] if c["name"] == "redis")
    assert redis["status"] == "unhealthy" and "Connect" in redis["reason"], redis
    _assert_only_redis_is_down(body)
    ready_code, ready = await _health(worker, "ready")
    assert ready_code == 200 and ready["ready"], ready  # degraded still takes traffic

    # One key, so every message lands on one partition, behind the one the sink is stuck on;
    # sent as one record batch, for which Tansu's ListOffsets answers too small an end offset.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers(kafka_url), linger_ms=200)
    await producer.start()
    try:
        run = uuid.uuid4().hex[:8]
        pending = [
            await producer.send(
                topic,
                encode(example(CacheInvalidation, keys=[f"outage:{run}:{i}"])),
                key=f"outage-{run}".encode(),
            )
            for i in range(30)
        ]
        sent = [await future for future in pending]
    finally:
        await producer.stop()
    tp = TopicPartition(topic, sent[0].partition)
    end = sent[-1].offset + 1

    async def stuck_lag() -> tuple[float, int] | None:
        # No commit yet on a partition that was empty: the group starts at offset 0.
        committed = await _committed(kafka_url, consumer_group(worker.app_id, topic), tp) or 0
        samples = await _samples(worker)
        lag = _total(
            samples, "scribe_consumer_lag_messages", topic=topic, partition=str(tp.partition)
        )
        if lag is None or lag != end - committed:
            return None
        return lag, committed

    lag, committed = await _eventually("lag equal to the broker's figure", stuck_lag, timeout=30)
    assert committed <= sent[0].offset  # nothing past the stuck invalidation was committed
    assert lag >= len(sent)
    samples = await _samples(worker)
    assert (_total(samples, "scribe_sink_retries_total", sink="redis") or 0) > 0
    assert (_total(samples, "scribe_sink_errors_total", sink="redis") or 0) > 0
    assert _total(samples, "scribe_health_status", component="redis") == 2

    records.append(redis_service.start(redis_port))  # same port: the worker's URL still holds
    redis_service.wait_ready(records[-1], redis_port)

    async def healthy_and_drained() -> bool | None:
        code, body = await _health(worker)
        if code != 200 or body["overall_status"] != "healthy":
            return None
        if await _committed(kafka_url, consumer_group(worker.app_id, topic), tp) != end:
            return None
        samples = await _samples(worker)
        drained = _total(
            samples, "scribe_consumer_lag_messages", topic=topic, partition=str(tp.partition)
        )
        return True if drained == 0 else None

    await _eventually("healthy again and the lag drained", healthy_and_drained, timeout=45)
    assert worker.alive()
