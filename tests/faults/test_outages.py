"""Faults injected into a running pipeline, one at a time: PostgreSQL stopped for 15 s, Redis
stopped for 15 s, the CDN answering 500 then 429 for a minute, the worker killed with SIGKILL
and restarted. Afterwards every valid event is reflected exactly once (ledger rows and rollups
in PostgreSQL, keys gone from Redis, URLs and tags purged at the CDN), every invalid one is in
its DLQ, no valid one is, the worker is alive and has consumed everything."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka.structs import RecordMetadata

from agents.invalidation.flow import CDN_INVALIDATION
from devkit.harness import WorkerProcess
from runtime.spec import ConsumerSpec
from tests.faults.conftest import FaultStack
from tests.faults.observe import (
    Outcome,
    committed_offset,
    eventually,
    flow_failures,
    log_size,
    metric_total,
    usage_totals,
)
from tests.faults.workload import CdnSimulator, Workload, first_offsets, keys_unlinked
from topics.catalog import CACHE_INVALIDATIONS, USAGE_EVENTS, TopicSpec

pytestmark = pytest.mark.faults

OUTAGE_SECONDS = 15.0
ROUNDS_DURING_OUTAGE = 5
# The CDN outage: 500 for the first half, then 429 with Retry-After for the second.
CDN_ERROR_SECONDS = 30.0
CDN_RATE_LIMITED_SECONDS = 30.0
CDN_RETRY_AFTER = "2"


async def _no_commit_past(
    kafka_url: str,
    app_id: str,
    spec: TopicSpec,
    sent_during_outage: list[RecordMetadata],
    flow: ConsumerSpec | None,
) -> None:
    """While the sink is down, no partition's committed offset passes a record that cannot
    have been written yet: the first one published after the server stopped. `flow`: the
    flow whose sink is down, when it is not the one `consumer_group` names for the topic."""
    for partition, offset in first_offsets(sent_during_outage, spec.name).items():
        committed = await committed_offset(
            kafka_url, app_id, spec.name, partition, flow.group_of(app_id) if flow else None
        )
        assert committed is None or committed <= offset, (
            f"{spec.name}[{partition}] committed {committed} past unwritten offset {offset}"
        )
        print(f"  {spec.name}[{partition}]: committed {committed} <= first unwritten {offset}")


async def _run_fault(
    fault_stack: FaultStack,
    worker: WorkerProcess,
    fault: str,
    *,
    begin: Callable[[], object],
    end: Callable[[], object],
    guarded: TopicSpec | None,
    metric_survives: bool,
    guarded_flow: ConsumerSpec | None = None,
    seconds: float = OUTAGE_SECONDS,
    cdn: CdnSimulator | None = None,
) -> Outcome:
    """Publish before, during and after the fault (`seconds` long); then measure. `guarded` is
    the topic whose sink is down: its offsets must not be committed past unwritten records
    meanwhile. With `cdn`, invalidations carry URLs and tags, checked at the CDN simulator."""
    env = fault_stack.env()
    load = Workload(fault, env["SCRIBE_KAFKA_URL"], cdn=cdn is not None)
    before = load.batch(2000, invalid=10, duplicates=50)
    during = [load.batch(200) for _ in range(ROUNDS_DURING_OUTAGE)]
    after = load.batch(1000, invalid=10, duplicates=50)

    await _cache_up_front(env, load)
    counted_before = keys_unlinked(worker) if metric_survives else None

    retries_before = metric_total(worker, "scribe_sink_retries_total")
    log_start = log_size(worker)
    await load.publish(*before)
    async with _connection(env) as db:  # mid-stream: some of it written, not all
        assert await eventually(lambda: _partly_written(db, load), timeout=60), (
            "the worker wrote nothing"
        )
        written = (await usage_totals(db, load.users)).rows
    published = sum(1 for topic, _, _ in before[0] if topic == USAGE_EVENTS.name)
    print(f"{fault}: injected with {written} ledger rows written, {published} usage records out")
    started = time.monotonic()
    await asyncio.to_thread(begin)
    print(f"{fault}: fault injected")
    sent_during: list[RecordMetadata] = []
    for number, batch in enumerate(during, start=1):
        sent_during.extend(await load.publish(*batch))
        print(f"  round {number}/{len(during)} published during the fault")
        await asyncio.sleep(seconds * 0.6 / len(during))
    if guarded is not None:
        await _no_commit_past(load.kafka_url, worker.app_id, guarded, sent_during, guarded_flow)
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
    await asyncio.to_thread(end)
    print(f"{fault}: recovered after {time.monotonic() - started:.1f} s")
    if guarded is not None:
        # The sink did fail and retry (the retries counter lives in the same worker process).
        retries = metric_total(worker, "scribe_sink_retries_total") - retries_before
        print(f"{fault}: {retries:.0f} sink write retries")
        assert retries > 0
    await load.publish(*after)

    db = await asyncpg.connect(env["SCRIBE_DATABASE_URL"])
    cache = aioredis.from_url(env["SCRIBE_REDIS_URL"])
    try:
        outcome = await load.verify(db, cache, worker, counted_before, cdn)
    finally:
        await db.close()
        await cache.aclose()
    assert outcome.lost == 0, worker.log_tail()
    assert outcome.duplicated == 0
    assert outcome.valid_dead_lettered == 0
    assert worker.alive(), worker.log_tail()
    assert flow_failures(worker, log_start) == []
    return outcome


async def _cache_up_front(env: dict[str, str], load: Workload) -> None:
    """Every key an invalidation will drop is cached up front (Redis may be down later)."""
    cache = aioredis.from_url(env["SCRIBE_REDIS_URL"])
    try:
        for key in (*load.doomed_keys(), load.kept_key):
            await cache.set(key, b"cached")
    finally:
        await cache.aclose()


@asynccontextmanager
async def _connection(env: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    db = await asyncpg.connect(env["SCRIBE_DATABASE_URL"])
    try:
        yield db
    finally:
        await db.close()


async def _partly_written(db: asyncpg.Connection, load: Workload) -> bool:
    return (await usage_totals(db, load.users)).rows > 0


async def test_postgres_stopped_for_15_seconds_mid_stream(
    fault_stack: FaultStack, fault_worker: WorkerProcess
) -> None:
    await _run_fault(
        fault_stack,
        fault_worker,
        "postgres-stopped-15s",
        begin=lambda: fault_stack.stop(fault_stack.postgres),
        end=lambda: fault_stack.start(fault_stack.postgres),
        guarded=USAGE_EVENTS,
        metric_survives=True,
    )


async def test_redis_stopped_for_15_seconds_mid_stream(
    fault_stack: FaultStack, fault_worker: WorkerProcess
) -> None:
    await _run_fault(
        fault_stack,
        fault_worker,
        "redis-stopped-15s",
        begin=lambda: fault_stack.stop(fault_stack.redis),
        end=lambda: fault_stack.start(fault_stack.redis),
        guarded=CACHE_INVALIDATIONS,
        metric_survives=True,
    )


async def test_worker_killed_with_sigkill_mid_stream_and_restarted(
    fault_stack: FaultStack, fault_worker: WorkerProcess
) -> None:
    await _run_fault(
        fault_stack,
        fault_worker,
        "worker-sigkill-restart",
        begin=fault_worker.kill,
        end=fault_worker.start,
        guarded=None,
        metric_survives=False,  # the restarted process counts from zero
    )


async def test_cdn_answering_500_then_429_for_a_minute(
    fault_stack: FaultStack, fault_worker: WorkerProcess
) -> None:
    """The purge API fails for a minute: 500 for 30 s, then 429 with Retry-After for 30 s.
    Redis goes on; the CDN flow retries (well within its default 15-minute retry deadline)
    and its group commits nothing past what is unpurged."""
    env = fault_stack.env()
    cdn = CdnSimulator(env["SCRIBE_CDN_URL"], env["SCRIBE_CDN_PROVIDERS"].split(","))

    def begin() -> None:
        # Faults answer in the order they were set: the 500s first, then the 429s.
        for fault in (
            {"provider": "*", "status": 500, "seconds": CDN_ERROR_SECONDS},
            {
                "provider": "*",
                "status": 429,
                "seconds": CDN_ERROR_SECONDS + CDN_RATE_LIMITED_SECONDS,
                "retry_after": CDN_RETRY_AFTER,
            },
        ):
            httpx.post(f"{cdn.url}/_sim/faults", json=fault, timeout=10).raise_for_status()

    def end() -> None:
        httpx.delete(f"{cdn.url}/_sim/faults", timeout=10).raise_for_status()
        statuses = httpx.get(f"{cdn.url}/_sim/stats", timeout=10).json()["calls"]
        print(f"cdn-500-then-429-60s: purge calls by status so far: {statuses}")

    await _run_fault(
        fault_stack,
        fault_worker,
        "cdn-500-then-429-60s",
        begin=begin,
        end=end,
        guarded=CACHE_INVALIDATIONS,
        metric_survives=True,
        guarded_flow=CDN_INVALIDATION,  # the Redis flow's group goes on
        seconds=CDN_ERROR_SECONDS + CDN_RATE_LIMITED_SECONDS,
        cdn=cdn,
    )
