"""Budgets, budget alerts and budget state in PostgreSQL, with a transactional outbox.

Alerts and state rows are written in the same transaction as the spend that caused them, so
the database, not a process's memory, decides that an alert happens once per user, month and
threshold. Publishing them is a second step that any process may finish: `publish_pending`
locks the pending rows (`SKIP LOCKED`, so two publishers never send the same row), hands them
to `deliver`, and marks them published only after `deliver` returned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Connection = asyncpg.Connection | PoolConnectionProxy

# Locked in user order so that two transactions touching the same users never deadlock, and
# so that a user's state versions follow the order their transactions committed in.
_LOCK_BUDGETS = """
SELECT user_id FROM budgets WHERE user_id = ANY($1::text[]) ORDER BY user_id FOR UPDATE
"""

# For each (user, month) just changed: the month's spend from the rollup, an alert row for
# every threshold reached (the unique key drops those that exist), and for the current UTC
# month a new budget-state version.
_REFRESH = """
WITH touched AS (
    SELECT DISTINCT user_id, month FROM unnest($1::text[], $2::date[]) AS t(user_id, month)
), spend AS (
    SELECT t.user_id, t.month, b.monthly_usd AS budget,
           coalesce((SELECT sum(m.cost_usd) FROM usage_monthly m
                     WHERE m.user_id = t.user_id AND m.month = t.month), 0) AS spent
    FROM touched t JOIN budgets b USING (user_id)
), alerts AS (
    INSERT INTO budget_alerts (user_id, month, threshold_pct, budget_usd, spent_usd)
    SELECT s.user_id, s.month, pct, s.budget, s.spent
    FROM spend s CROSS JOIN unnest($3::integer[]) AS pct
    WHERE s.spent * 100 >= s.budget * pct
    ORDER BY 1, 2, 3
    ON CONFLICT (user_id, month, threshold_pct) DO NOTHING
    RETURNING id
), state AS (
    INSERT INTO budget_state AS st (user_id, month, budget_usd, spent_usd, version)
    SELECT user_id, month, budget, spent, nextval('budget_state_version')
    FROM spend
    WHERE month = date_trunc('month', now() AT TIME ZONE 'UTC')::date
    ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE SET
        month = EXCLUDED.month,
        budget_usd = EXCLUDED.budget_usd,
        spent_usd = EXCLUDED.spent_usd,
        version = EXCLUDED.version,
        updated_at = now()
    RETURNING user_id
)
SELECT (SELECT count(*) FROM alerts) AS alerts, (SELECT count(*) FROM state) AS states
"""

_PENDING_ALERTS = """
SELECT id, user_id, month, threshold_pct, budget_usd, spent_usd, created_at
FROM budget_alerts
WHERE published_at IS NULL
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

_PENDING_STATES = """
SELECT user_id, month, budget_usd, spent_usd, version, updated_at
FROM budget_state
WHERE version > published_version
ORDER BY user_id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

# Budgets whose published state no longer matches the current UTC month's spend: a new
# month began, or a budget was set while a batch of that user's spend was in flight.
_STALE_BUDGETS = """
WITH current_month AS (SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date AS month)
SELECT b.user_id, c.month
FROM budgets b CROSS JOIN current_month c LEFT JOIN budget_state s USING (user_id)
WHERE s.user_id IS NULL
   OR s.month <> c.month
   OR s.budget_usd IS DISTINCT FROM b.monthly_usd
   OR s.spent_usd <> coalesce((SELECT sum(m.cost_usd) FROM usage_monthly m
                               WHERE m.user_id = b.user_id AND m.month = c.month), 0)
ORDER BY b.user_id
"""

PUBLISH_CHUNK = 1000


@dataclass(frozen=True)
class AlertRecord:
    id: int
    user_id: str
    month: date
    threshold_pct: int
    budget_usd: Decimal
    spent_usd: Decimal
    created_at: datetime


@dataclass(frozen=True)
class StateRecord:
    user_id: str
    month: date
    budget_usd: Decimal | None  # None: the budget was removed
    spent_usd: Decimal
    version: int
    updated_at: datetime


@dataclass(frozen=True)
class Budget:
    user_id: str
    monthly_usd: Decimal
    spent_usd: Decimal  # this UTC month
    updated_at: datetime


Deliver = Callable[[Sequence[AlertRecord], Sequence[StateRecord]], Awaitable[None]]


async def lock_budgets(conn: Connection, user_ids: Sequence[str]) -> list[str]:
    """Inside a transaction: lock the budget rows of these users; return who has a budget."""
    rows = await conn.fetch(_LOCK_BUDGETS, list(user_ids))
    return [row["user_id"] for row in rows]


async def refresh_budgets(
    conn: Connection, changed: Sequence[tuple[str, date]], thresholds_pct: Sequence[int]
) -> tuple[int, int]:
    """Inside the transaction that changed these (user, month) spends: record the alerts now
    due and the new budget state. Returns (alerts recorded, states recorded)."""
    if not changed:
        return 0, 0
    row = await conn.fetchrow(
        _REFRESH,
        [user for user, _ in changed],
        [month for _, month in changed],
        list(thresholds_pct),
    )
    assert row is not None  # a SELECT of two scalars always returns a row
    return int(row["alerts"]), int(row["states"])


class BudgetStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def set_budget(
        self, user_id: str, monthly_usd: Decimal, thresholds: Sequence[int]
    ) -> None:
        """Store the budget and, in the same transaction, the alerts and state it implies."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO budgets (user_id, monthly_usd) VALUES ($1, $2) "
                "ON CONFLICT (user_id) DO UPDATE SET monthly_usd = EXCLUDED.monthly_usd, "
                "updated_at = now()",
                user_id,
                monthly_usd,
            )
            month = await conn.fetchval(
                "SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date"
            )
            await refresh_budgets(conn, [(user_id, month)], thresholds)

    async def reconcile(self, thresholds: Sequence[int]) -> int:
        """Bring every stale budget state (and the alerts it implies) up to date; return how
        many users were refreshed."""
        async with self.pool.acquire() as conn, conn.transaction():
            stale = [(r["user_id"], r["month"]) for r in await conn.fetch(_STALE_BUDGETS)]
            if stale:
                await lock_budgets(conn, [user for user, _ in stale])
                await refresh_budgets(conn, stale, thresholds)
            return len(stale)

    async def remove_budget(self, user_id: str) -> bool:
        """Drop the budget; its state becomes a tombstone to publish. False if there was none."""
        async with self.pool.acquire() as conn, conn.transaction():
            removed = await conn.fetchval(
                "DELETE FROM budgets WHERE user_id = $1 RETURNING user_id", user_id
            )
            if removed is None:
                return False
            await conn.execute(
                "INSERT INTO budget_state (user_id, month, budget_usd, spent_usd, version) "
                "VALUES ($1, date_trunc('month', now() AT TIME ZONE 'UTC')::date, NULL, 0, "
                "        nextval('budget_state_version')) "
                "ON CONFLICT (user_id) DO UPDATE SET budget_usd = NULL, "
                "version = EXCLUDED.version, updated_at = now()",
                user_id,
            )
            return True

    async def budgets(self, user_id: str | None = None) -> list[Budget]:
        rows = await self.pool.fetch(
            """
            SELECT b.user_id, b.monthly_usd, b.updated_at,
                   coalesce((SELECT sum(m.cost_usd) FROM usage_monthly m
                             WHERE m.user_id = b.user_id
                               AND m.month = date_trunc('month', now() AT TIME ZONE 'UTC')::date),
                            0) AS spent
            FROM budgets b
            WHERE $1::text IS NULL OR b.user_id = $1
            ORDER BY b.user_id
            """,
            user_id,
        )
        return [Budget(r["user_id"], r["monthly_usd"], r["spent"], r["updated_at"]) for r in rows]

    async def alerts(self, user_id: str, month: date) -> list[AlertRecord]:
        rows = await self.pool.fetch(
            "SELECT id, user_id, month, threshold_pct, budget_usd, spent_usd, created_at "
            "FROM budget_alerts WHERE user_id = $1 AND month = $2 ORDER BY threshold_pct",
            user_id,
            month,
        )
        return [AlertRecord(**dict(r)) for r in rows]

    async def publish_pending(self, deliver: Deliver) -> tuple[int, int]:
        """Hand every pending alert and state to `deliver`, chunk by chunk, marking each chunk
        published once `deliver` returned. Returns (alerts, states) published."""
        alerts_done = states_done = 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                alert_rows = await conn.fetch(_PENDING_ALERTS, PUBLISH_CHUNK)
                state_rows = await conn.fetch(_PENDING_STATES, PUBLISH_CHUNK)
                if not alert_rows and not state_rows:
                    return alerts_done, states_done
                alerts = [AlertRecord(**dict(r)) for r in alert_rows]
                states = [StateRecord(**dict(r)) for r in state_rows]
                await deliver(alerts, states)
                await conn.execute(
                    "UPDATE budget_alerts SET published_at = now() WHERE id = ANY($1::bigint[])",
                    [a.id for a in alerts],
                )
                await conn.execute(
                    "UPDATE budget_state SET published_version = version "
                    "WHERE user_id = ANY($1::text[])",
                    [s.user_id for s in states],
                )
            alerts_done += len(alerts)
            states_done += len(states)
