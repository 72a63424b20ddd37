"""Ledger partitions: the current month and the next two exist ahead of time; earlier months
are created on demand; the retention setting's detach keeps the rollups and drops the month's
dedupe guard rows, and a late event for a detached month attaches it again and is still
counted once."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import asyncpg
import pytest

from devkit.harness import WorkerProcess
from schemas.events import UsageEvent
from schemas.examples import example
from sinks.postgres.migrate import migrate
from sinks.postgres.usage import PricedUsage, UsageLedger
from tests.integration.usage_pipeline import months_back

pytestmark = pytest.mark.integration


async def attached(db: asyncpg.Connection, name: str) -> bool:
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1) "
            "AND inhparent = 'usage_events'::regclass)",
            name,
        )
    )


def partition(month: date) -> str:
    return f"usage_events_y{month:%Y}m{month:%m}"


async def test_the_current_month_and_the_next_two_are_created_ahead(
    worker: WorkerProcess, db: asyncpg.Connection
) -> None:
    today = datetime.now(UTC).date()
    for ahead in (0, 1, 2):
        assert await attached(db, partition(months_back(today, -ahead))), worker.log_tail()


async def test_detached_months_keep_their_rollups_and_a_late_event_reattaches(
    database_url: str, db: asyncpg.Connection
) -> None:
    user = f"ut-{uuid.uuid4().hex[:10]}"
    await migrate(database_url)
    march = date(2019, 3, 1)

    def usage(cost: str) -> PricedUsage:
        event = example(
            UsageEvent,
            user_id=user,
            cost_usd=Decimal(cost),
            occurred_at=datetime(2019, 3, 14, 9, 30, tzinfo=UTC),
        )
        return PricedUsage(event, Decimal(cost), None)

    async def monthly() -> Decimal:
        spent: Decimal = await db.fetchval(
            "SELECT sum(cost_usd) FROM usage_monthly WHERE user_id = $1 AND month = $2",
            user,
            march,
        )
        return spent

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        ledger = UsageLedger(pool, (50, 80, 100))
        first = usage("0.5")
        assert (await ledger.write([first])).inserted == 1  # the month is created on demand
        assert await attached(db, partition(march))

        assert partition(march) in await ledger.detach_before(date(2019, 4, 1))
        assert not await attached(db, partition(march))
        assert await db.fetchval(f"SELECT count(*) FROM {partition(march)}") == 1  # kept aside
        assert await db.fetchval("SELECT count(*) FROM usage_events WHERE user_id = $1", user) == 0
        assert await monthly() == Decimal("0.5")
        guarded = "SELECT count(*) FROM usage_event_ids WHERE event_id = $1"
        assert await db.fetchval(guarded, first.event.event_id) == 0  # the guard is bounded

        assert (await ledger.write([usage("0.25")])).inserted == 1
        assert await attached(db, partition(march))
        assert await db.fetchval("SELECT count(*) FROM usage_events WHERE user_id = $1", user) == 2
        assert (await ledger.write([first])).inserted == 0  # still counted once: the ledger's key
        assert await monthly() == Decimal("0.75")
        assert (
            await db.fetchval(
                "SELECT count(*) FROM usage_events WHERE event_id = $1", first.event.event_id
            )
            == 1
        )
    finally:
        await pool.close()
