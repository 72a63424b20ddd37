"""Rollup rows that later batches add to are updated in place on their page (a HOT update: no
new index entries), because the rollup tables leave half of each page free (migration 0500)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from schemas.events import UsageEvent
from schemas.examples import example
from sinks.postgres.migrate import migrate
from sinks.postgres.usage import PricedUsage, UsageLedger

pytestmark = pytest.mark.integration

# Enough rows to fill several pages at the default fill factor, where an update finds no room.
USERS = 300
ROLLUPS = ("usage_daily", "usage_monthly")


async def pages_of(db: asyncpg.Connection, table: str, prefix: str) -> dict[str, int]:
    """The page (block number) holding each of these users' rows."""
    rows = await db.fetch(
        f"SELECT user_id, (ctid::text::point)[0]::bigint AS page FROM {table} "
        "WHERE user_id LIKE $1 || '%'",
        prefix,
    )
    return {row["user_id"]: row["page"] for row in rows}


async def test_a_later_batch_updates_the_rollup_rows_on_their_own_pages(
    database_url: str, db: asyncpg.Connection
) -> None:
    await migrate(database_url)
    prefix = f"hot-{uuid.uuid4().hex[:8]}-"
    now = datetime.now(UTC).replace(microsecond=0)

    def batch() -> list[PricedUsage]:
        return [
            PricedUsage(
                example(
                    UsageEvent,
                    event_id=uuid.uuid4().hex,
                    user_id=f"{prefix}{n:03d}",
                    cost_usd=Decimal("0.25"),
                    occurred_at=now,
                ),
                Decimal("0.25"),
                None,
            )
            for n in range(USERS)
        ]

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        ledger = UsageLedger(pool, (50, 80, 100))
        assert (await ledger.write(batch())).inserted == USERS
        before = {table: await pages_of(db, table, prefix) for table in ROLLUPS}
        assert (await ledger.write(batch())).inserted == USERS
        after = {table: await pages_of(db, table, prefix) for table in ROLLUPS}
    finally:
        await pool.close()

    for table in ROLLUPS:
        assert len(before[table]) == USERS
        moved = sorted(user for user, page in after[table].items() if page != before[table][user])
        assert moved == [], f"{table}: {len(moved)} of {USERS} rows moved to another page"
    spent = await db.fetchval(
        "SELECT sum(cost_usd) FROM usage_monthly WHERE user_id LIKE $1 || '%'", prefix
    )
    assert spent == Decimal("0.25") * 2 * USERS
