"""Every usage event counted exactly once: 100,000 events published, the same 100,000 again,
then the topic replayed from offset 0 by a fresh consumer group, and a worker SIGKILLed
mid-stream and restarted — the rollups stay the exact NUMERIC sums of the distinct events."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from agents.usage.flow import USAGE
from agents.usage.synthetic import SyntheticUsage, synthetic_usage
from devkit.harness import WorkerProcess, new_worker
from tests.integration.usage_pipeline import (
    expected_cost,
    expected_rollups,
    hourly_rollup,
    minus,
    months_back,
    publish,
    user_rollup,
    wait_committed_past,
)

pytestmark = pytest.mark.integration

EVENTS = 100_000


class Expected:
    """The exact totals of a run's distinct events, checked against every rollup."""

    def __init__(self, run: str, items: list[SyntheticUsage]) -> None:
        self.user_prefix = f"{run}-u"
        self.daily, self.monthly, self.hourly = expected_rollups(i.fields for i in items)
        self.events = len({i.fields["event_id"] for i in items})
        self.cost = sum((expected_cost(i.fields) for i in items), Decimal(0))
        self.hourly_before: dict[tuple[Any, ...], Any] = {}

    async def snapshot_shared(self, db: asyncpg.Connection) -> None:
        self.hourly_before = await hourly_rollup(db, self.hourly)

    async def check(self, db: asyncpg.Connection, stage: str) -> None:
        row = await db.fetchrow(
            "SELECT count(*), count(DISTINCT event_id), sum(cost_usd) FROM usage_events "
            "WHERE user_id LIKE $1",
            self.user_prefix + "%",
        )
        assert row is not None
        count, distinct, cost = row
        assert (count, distinct, cost) == (self.events, self.events, self.cost), stage
        daily = await user_rollup(db, "usage_daily", "day", self.user_prefix)
        assert daily == self.daily, f"usage_daily {stage}"
        monthly = await user_rollup(db, "usage_monthly", "month", self.user_prefix)
        assert monthly == self.monthly, f"usage_monthly {stage}"
        hourly = minus(await hourly_rollup(db, self.hourly), self.hourly_before)
        assert hourly == self.hourly, f"usage_hourly_by_model {stage}"
        print(f"  {stage}: {count:,} events, {cost} USD: every rollup exact", flush=True)


async def test_published_twice_then_replayed_by_a_fresh_group_the_sums_stay_exact(
    services: dict[str, str],
    state_dir: Path,
    kafka_url: str,
    worker: WorkerProcess,
    db: asyncpg.Connection,
) -> None:
    run = f"ux{uuid.uuid4().hex[:8]}"
    today = datetime.now(UTC).date()
    # Two months before the current one: their ledger partitions are created on demand.
    months = [months_back(today, 2), months_back(today, 1)]
    items = list(synthetic_usage(run, EVENTS, months=months, seed=5))
    expected = Expected(run, items)
    await expected.snapshot_shared(db)
    group = USAGE.group_of(worker.app_id)

    first = await publish(kafka_url, items)
    await wait_committed_past(kafka_url, group, first, timeout=240, log=worker.log_tail)
    await expected.check(db, "after the first publication")

    second = await publish(kafka_url, items)
    await wait_committed_past(kafka_url, group, second, timeout=240, log=worker.log_tail)
    await expected.check(db, "after the same 100,000 events again")

    replayer = new_worker(services, state_dir / "workers").start()
    try:
        await wait_committed_past(
            kafka_url, USAGE.group_of(replayer.app_id), second, timeout=240, log=replayer.log_tail
        )
    finally:
        replayer.stop()
    await expected.check(db, "after a fresh group replayed the topic from offset 0")


async def test_a_worker_killed_mid_stream_and_restarted_gives_the_same_exact_sums(
    kafka_url: str, worker: WorkerProcess, db: asyncpg.Connection
) -> None:
    run = f"uk{uuid.uuid4().hex[:8]}"
    months = [months_back(datetime.now(UTC).date(), 3)]
    items = list(synthetic_usage(run, EVENTS, months=months, seed=9))
    expected = Expected(run, items)
    await expected.snapshot_shared(db)

    publishing = asyncio.create_task(publish(kafka_url, items))
    counted = 0
    deadline = time.monotonic() + 120
    while counted < EVENTS // 20 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        counted = await db.fetchval(
            "SELECT count(*) FROM usage_events WHERE user_id LIKE $1", expected.user_prefix + "%"
        )
    worker.kill()
    at_kill = await db.fetchval(
        "SELECT count(*) FROM usage_events WHERE user_id LIKE $1", expected.user_prefix + "%"
    )
    print(f"  SIGKILL with {at_kill:,} of {EVENTS:,} events in the ledger", flush=True)
    assert 0 < at_kill < EVENTS, "the kill did not land mid-stream"
    last = await publishing

    worker.start()
    await wait_committed_past(
        kafka_url, USAGE.group_of(worker.app_id), last, timeout=240, log=worker.log_tail
    )
    await expected.check(db, "after SIGKILL mid-stream and a restart")
