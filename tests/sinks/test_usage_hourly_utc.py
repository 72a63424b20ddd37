"""The hourly rollup's hour is the UTC hour, whatever the session's time zone: in a zone with a
half-hour offset, truncating in the session's zone would file 10:45 UTC under 10:30 UTC."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from schemas.events import UsageEvent
from schemas.examples import example
from sinks.postgres.migrate import migrate
from sinks.postgres.usage import PricedUsage, UsageLedger


@pytest.fixture
async def kolkata_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """Each session in UTC+05:30: set at connect, so the pool's RESET ALL on release keeps it
    (a `SET TIME ZONE` would be reset)."""
    await migrate(database_url)
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=2, server_settings={"timezone": "Asia/Kolkata"}
    )
    try:
        yield pool
    finally:
        await pool.close()


async def test_an_event_at_10_45_utc_is_counted_in_the_10_00_utc_hour(
    kolkata_pool: asyncpg.Pool,
) -> None:
    model = f"hourly-{uuid.uuid4().hex[:10]}"
    today = datetime.now(UTC).date()
    at = datetime(today.year, today.month, today.day, 10, 45, tzinfo=UTC)
    event = example(
        UsageEvent, event_id=f"e-{model}", model=model, occurred_at=at, cost_usd=Decimal(1)
    )
    ledger = UsageLedger(kolkata_pool, [80])

    written = await ledger.write([PricedUsage(event, Decimal(1), None)])

    assert written.inserted == 1
    assert await kolkata_pool.fetchval("SHOW TIME ZONE") == "Asia/Kolkata"
    hours = await kolkata_pool.fetch(
        "SELECT hour, requests FROM usage_hourly_by_model WHERE model = $1", model
    )
    assert [(r["hour"], r["requests"]) for r in hours] == [(at.replace(minute=0), 1)]
