"""The usage ledger and its rollups, written exactly once per event_id.

One transaction per batch: the batch is COPied into a temporary staging table (`StagedBatch`,
which a worker under load makes while the batch before is still written); one statement
inserts the ids new to `usage_event_ids` (ON CONFLICT DO NOTHING RETURNING), puts only those
rows into the month-partitioned ledger (ON CONFLICT DO NOTHING: an event of a detached month,
whose guard row is gone, is refused by the ledger's key) and adds only the rows the ledger
took to the rollups; then the budgets of
the users whose spend changed are refreshed (alerts, state) before the commit. Redelivered and
replayed events therefore change nothing, and the caller commits its offsets only after this
returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from schemas.usage_wire import Usage
from sinks.postgres.budgets import lock_budgets, refresh_budgets


class PartitionMissingError(RuntimeError):
    """A ledger partition this process thought ready was detached meanwhile; retried."""


RETRYABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    # Two workers briefly own one partition during a rebalance; the loser retries.
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    PartitionMissingError,
)

_STAGE_COLUMNS = (
    "event_id",
    "request_id",
    "user_id",
    "service",
    "model",
    "input_tokens",
    "output_tokens",
    "images",
    "free_tier",
    "cost_usd",
    "occurred_at",
    "world_id",
    "latency_ms",
    "priority",
    "price_catalog_version",
)

_CREATE_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS usage_stage (
    event_id text NOT NULL,
    request_id text NOT NULL,
    user_id text NOT NULL,
    service text NOT NULL,
    model text NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    images integer NOT NULL,
    free_tier boolean NOT NULL,
    cost_usd numeric NOT NULL,
    occurred_at timestamptz NOT NULL,
    world_id text,
    latency_ms integer,
    priority text,
    price_catalog_version text
) ON COMMIT DROP
"""


def rollup_upsert(table: str, keys: str, key_exprs: str, group: str) -> str:
    """The statement adding the rows of a CTE named `inserted` to a rollup table (the bench's
    ledger fill builds its rollups with the same statements)."""
    return f"""
    INSERT INTO {table} AS t ({keys}, requests, input_tokens, output_tokens, images,
                              free_tier_requests, free_tier_images, cost_usd)
    SELECT {key_exprs}, count(*), sum(input_tokens), sum(output_tokens), sum(images),
           count(*) FILTER (WHERE free_tier), coalesce(sum(images) FILTER (WHERE free_tier), 0),
           sum(cost_usd)
    FROM inserted GROUP BY {group} ORDER BY {group}
    ON CONFLICT ({keys}) DO UPDATE SET
        requests = t.requests + EXCLUDED.requests,
        input_tokens = t.input_tokens + EXCLUDED.input_tokens,
        output_tokens = t.output_tokens + EXCLUDED.output_tokens,
        images = t.images + EXCLUDED.images,
        free_tier_requests = t.free_tier_requests + EXCLUDED.free_tier_requests,
        free_tier_images = t.free_tier_images + EXCLUDED.free_tier_images,
        cost_usd = t.cost_usd + EXCLUDED.cost_usd
    """


# The rollups of the rows of a CTE named `inserted`, as CTE bodies by name.
ROLLUP_UPSERTS = {
    "daily": rollup_upsert(
        "usage_daily",
        "user_id, day, service, model",
        "user_id, (occurred_at AT TIME ZONE 'UTC')::date, service, model",
        "1, 2, 3, 4",
    ),
    "monthly": rollup_upsert(
        "usage_monthly",
        "user_id, month, service, model",
        "user_id, date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date, service, model",
        "1, 2, 3, 4",
    ),
    "hourly": rollup_upsert(
        "usage_hourly_by_model",
        "hour, service, model",
        "date_trunc('hour', occurred_at, 'UTC'), service, model",
        "1, 2, 3",
    ),
}

_COLUMNS = ", ".join(_STAGE_COLUMNS)
# Rollup rows are upserted in key order, so two overlapping batches lock them in one order.
# The guard holds the ids of the retained months (migration 0300); the ledger's own key refuses
# a copy of an event whose guard row went with its detached month.
# A row's `ingested_at` is when this statement ran, not when its transaction began: a batch
# staged ahead began its transaction while the batch before it was still written.
# Every period is the UTC one: date_trunc without a zone cuts at the session zone's hours (in a
# zone with a half-hour offset, 10:45 UTC would be filed under the hour from 10:30 UTC).
_WRITE_FROM_STAGE = f"""
WITH new_ids AS (
    INSERT INTO usage_event_ids (event_id, month)
    SELECT event_id, date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date
    FROM usage_stage ORDER BY event_id
    ON CONFLICT DO NOTHING
    RETURNING event_id
), inserted AS (
    INSERT INTO usage_events ({_COLUMNS}, ingested_at)
    SELECT {", ".join(f"s.{c}" for c in _STAGE_COLUMNS)}, statement_timestamp()
    FROM usage_stage s JOIN new_ids USING (event_id)
    ON CONFLICT DO NOTHING
    RETURNING user_id, service, model, input_tokens, output_tokens, images, free_tier,
              cost_usd, occurred_at
), daily AS ({ROLLUP_UPSERTS["daily"]}), monthly AS ({ROLLUP_UPSERTS["monthly"]}), hourly AS ({
    ROLLUP_UPSERTS["hourly"]
})
SELECT user_id, date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date AS month, service,
       model, count(*) AS events, sum(cost_usd) AS cost_usd
FROM inserted GROUP BY 1, 2, 3, 4
"""


@dataclass(frozen=True, slots=True)
class PricedUsage:
    event: Usage
    cost_usd: Decimal
    catalog_version: str | None  # None: the producer's own cost_usd


@dataclass(frozen=True)
class LedgerWrite:
    inserted: int  # events new to the ledger; the rest were already counted
    alerts: int  # budget alerts now due (pending publication)
    states: int  # budget states changed (pending publication)
    # What the new events cost, by (service, model).
    cost_by_model: dict[tuple[str, str], Decimal] = field(default_factory=dict)

    def __add__(self, other: LedgerWrite) -> LedgerWrite:
        costs = dict(self.cost_by_model)
        for key, cost in other.cost_by_model.items():
            costs[key] = costs.get(key, Decimal(0)) + cost
        return LedgerWrite(
            self.inserted + other.inserted,
            self.alerts + other.alerts,
            self.states + other.states,
            costs,
        )


Connection = asyncpg.Connection | PoolConnectionProxy


def first_of_each_id(rows: Sequence[PricedUsage]) -> list[PricedUsage]:
    """A batch may hold one event twice (a producer retry); the ledger takes the first."""
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row.event.event_id not in seen:
            seen.add(row.event.event_id)
            unique.append(row)
    return unique


def month_of(day: date) -> date:
    return day.replace(day=1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def months_ahead(today: date, ahead: int) -> list[date]:
    """The current month and the `ahead` months after it."""
    return [add_months(month_of(today), n) for n in range(ahead + 1)]


def retention_cutoff(today: date, retention_months: int) -> date:
    """Ledger months before this one are detached: the current month and the
    `retention_months` before it are kept."""
    return add_months(month_of(today), -retention_months)


def _stage_record(row: PricedUsage) -> tuple[object, ...]:
    e = row.event
    return (
        e.event_id,
        e.request_id,
        e.user_id,
        e.service,
        e.model,
        e.input_tokens,
        e.output_tokens,
        e.images,
        e.free_tier,
        row.cost_usd,
        e.occurred_at,
        e.world_id,
        e.latency_ms,
        e.priority.value if e.priority else None,
        row.catalog_version,
    )


async def stage(conn: Connection, rows: Sequence[PricedUsage]) -> None:
    """The rows in this transaction's staging table, which the ledger statement reads."""
    await conn.execute(_CREATE_STAGE)
    await conn.copy_records_to_table(
        "usage_stage", records=[_stage_record(r) for r in rows], columns=_STAGE_COLUMNS
    )


class StagedBatch:
    """A batch's rows in the staging table of a transaction not yet committed: the ledger
    statement's input, made before the write that needs it (`UsageLedger.stage`). It locks
    nothing and changes nothing another transaction sees, so a worker can stage one batch
    while the batch before it is still written. Leaving the block rolls back what was not
    committed and returns the connection to its pool."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        conn: PoolConnectionProxy,
        rows: list[PricedUsage],
        months: set[date],
    ) -> None:
        self.pool = pool
        self.conn = conn
        self.months = months
        self.users = sorted({r.event.user_id for r in rows})
        # Each statement sees what committed before it: the ledger statement of a batch staged
        # ahead must see the batch before it, committed after this transaction began.
        self.transaction = conn.transaction(isolation="read_committed")
        self._released = False

    async def __aenter__(self) -> StagedBatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    async def release(self) -> None:
        """Roll back what was not committed and give the connection back (once)."""
        if self._released:
            return
        self._released = True
        try:
            if self.conn.is_in_transaction():
                await self.transaction.rollback()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            pass  # a connection that cannot roll back is closed by the pool, not reused
        finally:
            await self.pool.release(self.conn)


class UsageLedger:
    def __init__(self, pool: asyncpg.Pool, alert_thresholds_pct: Sequence[int]) -> None:
        self.pool = pool
        self.alert_thresholds_pct = list(alert_thresholds_pct)
        self._months_ready: set[date] = set()

    async def ensure_months(self, months: set[date]) -> None:
        """Create (or re-attach) the ledger partitions of these months, once per process."""
        missing = sorted(months - self._months_ready)
        if not missing:
            return
        async with self.pool.acquire() as conn:
            for month in missing:
                await conn.execute("SELECT scribe_ensure_usage_partition($1)", month)
                self._months_ready.add(month)

    async def detach_before(self, cutoff: date) -> list[str]:
        """Detach the ledger partitions of months before `cutoff`; return their names."""
        rows = await self.pool.fetch("SELECT scribe_detach_usage_partitions($1) AS name", cutoff)
        self._months_ready = {m for m in self._months_ready if m >= cutoff}
        return [row["name"] for row in rows]

    async def stage(self, priced: Sequence[PricedUsage]) -> StagedBatch | None:
        """Open the batch's transaction and stage its rows (None: nothing to write)."""
        rows = first_of_each_id(priced)
        if not rows:
            return None
        months = {month_of(r.event.occurred_at.date()) for r in rows}
        await self.ensure_months(months)
        staged = StagedBatch(self.pool, await self.pool.acquire(), rows, months)
        try:
            await staged.transaction.start()
            await stage(staged.conn, rows)
        except BaseException:
            await staged.release()
            raise
        return staged

    async def write(
        self, priced: Sequence[PricedUsage], staged: StagedBatch | None = None
    ) -> LedgerWrite:
        """Write a batch; only events new to the ledger change the rollups and budgets.
        `staged`: these same events, staged ahead of time (it is released either way)."""
        if staged is None:
            staged = await self.stage(priced)
            if staged is None:
                return LedgerWrite(0, 0, 0)
        async with staged:
            try:
                written = await self._write_staged(staged.conn, staged.users)
                await staged.transaction.commit()
                return written
            except asyncpg.CheckViolationError as exc:
                if "no partition" not in str(exc):
                    raise
                self._months_ready -= staged.months
                raise PartitionMissingError(str(exc)) from exc

    async def _write_staged(self, conn: Connection, users: list[str]) -> LedgerWrite:
        # Locked here, not while staging: a batch staged ahead holding them could make the
        # write of the batch before it (retried, or cut down by a rebalance) wait for it forever.
        budgeted = set(await lock_budgets(conn, users))
        changed = await conn.fetch(_WRITE_FROM_STAGE)
        alerts, states = await refresh_budgets(
            conn,
            sorted({(c["user_id"], c["month"]) for c in changed if c["user_id"] in budgeted}),
            self.alert_thresholds_pct,
        )
        costs: dict[tuple[str, str], Decimal] = {}
        for c in changed:
            key = (c["service"], c["model"])
            costs[key] = costs.get(key, Decimal(0)) + c["cost_usd"]
        return LedgerWrite(sum(c["events"] for c in changed), alerts, states, costs)
