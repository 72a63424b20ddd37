"""A budget whose state went stale — set while its user's batch was in flight, or a month
that rolled over — is brought up to date by the worker's reconciliation, once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from schemas.events import UsageEvent
from schemas.examples import example
from sinks.postgres.budgets import BudgetStore
from sinks.postgres.migrate import migrate
from sinks.postgres.usage import PricedUsage, UsageLedger
from tests.integration.usage_pipeline import months_back

pytestmark = pytest.mark.integration

THRESHOLDS = (50, 80, 100)


async def test_reconcile_records_the_alerts_and_state_a_race_missed(
    database_url: str, db: asyncpg.Connection
) -> None:
    user = f"uc-{uuid.uuid4().hex[:10]}"
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        ledger, store = UsageLedger(pool, THRESHOLDS), BudgetStore(pool)
        event = example(UsageEvent, user_id=user, cost_usd=Decimal("8.5"))
        await ledger.write([PricedUsage(event, Decimal("8.5"), None)])
        # The budget appears without its refresh, as if set while that batch was in flight.
        await db.execute("INSERT INTO budgets (user_id, monthly_usd) VALUES ($1, 10)", user)
        assert await db.fetchval("SELECT count(*) FROM budget_state WHERE user_id = $1", user) == 0

        assert await store.reconcile(THRESHOLDS) >= 1
        alerts = await store.alerts(user, datetime.now(UTC).date().replace(day=1))
        assert [a.threshold_pct for a in alerts] == [50, 80]
        state = await db.fetchrow("SELECT * FROM budget_state WHERE user_id = $1", user)
        assert state is not None
        assert (state["spent_usd"], state["budget_usd"]) == (Decimal("8.5"), Decimal(10))

        # A state left from last month is moved to this month, with nothing spent yet.
        last_month = months_back(datetime.now(UTC).date(), 1)
        await db.execute(
            "UPDATE budget_state SET month = $2, spent_usd = 99 WHERE user_id = $1",
            user,
            last_month,
        )
        version = state["version"]
        await store.reconcile(THRESHOLDS)
        state = await db.fetchrow("SELECT * FROM budget_state WHERE user_id = $1", user)
        assert state is not None
        assert state["month"] == datetime.now(UTC).date().replace(day=1)
        assert state["spent_usd"] == Decimal("8.5")
        assert state["version"] > version

        # Up to date: nothing more to do for this user.
        await store.reconcile(THRESHOLDS)
        assert (
            await db.fetchval("SELECT version FROM budget_state WHERE user_id = $1", user)
            == state["version"]
        )
        assert len(await store.alerts(user, datetime.now(UTC).date().replace(day=1))) == 2
    finally:
        await pool.close()
