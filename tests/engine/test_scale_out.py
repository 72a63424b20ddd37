"""Scale-out on Apache Kafka: `scribe worker` processes in one consumer group share the
partitions; one is SIGKILLed mid-stream, the others take its partitions over, and once the
stream is drained the ledger's totals equal the exact sums of what was published."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import httpx
import pytest

from scribe.load import (
    expected_daily,
    ledger_daily,
    publish_usage,
    usage_events,
    wait_until_stored,
    with_redeliveries,
)
from scribe.settings import Settings
from scribe.workers import WorkerProcess
from tests.engine.conftest import WorkerGroup, assigned_partitions

pytestmark = pytest.mark.engine

EVENTS = 12_000
RATE = 1_500  # events/s: the stream lasts ~8 s, so the kill lands mid-stream
KILL_AFTER = 4_000


def messages_in(worker: WorkerProcess) -> float:
    body = httpx.get(f"{worker.url}/metrics", timeout=5).text
    prefix = 'scribe_messages_in_total{topic="usage.events"} '
    return sum(float(line[len(prefix) :]) for line in body.splitlines() if line.startswith(prefix))


async def wait_for_spread(workers: list[WorkerProcess], timeout: float = 90) -> list[int]:
    """Until every worker holds some usage.events partitions and together they hold all."""
    total = Settings.from_env().topic_partitions
    deadline = time.monotonic() + timeout
    spread: list[int] = []
    while time.monotonic() < deadline:
        spread = [assigned_partitions(w) for w in workers]
        if sum(spread) == total and all(spread):
            return spread
        await asyncio.sleep(0.5)
    raise AssertionError(f"partitions not shared within {timeout:.0f} s: {spread} of {total}")


async def run_kill_mid_stream(group: WorkerGroup, db: asyncpg.Connection, kafka_url: str) -> None:
    """Publish a stream, SIGKILL the group's first worker mid-stream, check exact totals."""
    workers = group.alive()
    spread = await wait_for_spread(workers)
    print(f"partitions per worker before the kill: {spread}")

    run_id = f"scale-{uuid.uuid4().hex[:8]}"
    events = usage_events(run_id, EVENTS)
    victim = workers[0]
    killed_after: list[float] = []

    def kill_mid_stream(sent: int) -> None:
        if sent >= KILL_AFTER and not killed_after:
            killed_after.append(messages_in(victim))
            victim.kill()

    await publish_usage(
        kafka_url, with_redeliveries(events, 0.02), rate=RATE, on_progress=kill_mid_stream
    )
    assert killed_after and killed_after[0] > 0, "the killed worker had processed nothing"
    assert not victim.alive()

    stored = await wait_until_stored(db, run_id, len(events), timeout=180, report=print)
    assert stored == len(events), group.logs()
    await asyncio.sleep(2)  # a late duplicate write would land in this window
    assert await ledger_daily(db, run_id) == expected_daily(events)

    survivors = group.alive()
    assert len(survivors) == len(workers) - 1, group.logs()
    print(f"partitions per survivor after the kill: {await wait_for_spread(survivors)}")


@pytest.mark.parametrize("workers", [2, 3])
async def test_workers_share_partitions_and_survivors_take_over_a_killed_one(
    workers: int, worker_group: WorkerGroup, db: asyncpg.Connection, kafka_url: str
) -> None:
    worker_group.start(workers)
    await run_kill_mid_stream(worker_group, db, kafka_url)
