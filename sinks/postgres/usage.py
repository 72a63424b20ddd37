"""The usage ledger and its rollups, written exactly once per event_id.

One statement per batch: the ids new to `usage_event_ids` select which rows enter the ledger,
and only those rows are added to the rollups, all in one transaction. Redelivered and replayed
events therefore change nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from schemas.events import UsageEvent

RETRYABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    # Workers in one group upsert shared rollup rows (usage_hourly_by_model) at once: PostgreSQL
    # may abort one transaction as a deadlock. It rolled back whole, so writing again is safe.
    asyncpg.exceptions.TransactionRollbackError,
)

_WRITE_BATCH = """
WITH batch AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
        $8::integer[], $9::boolean[], $10::numeric[], $11::timestamptz[], $12::text[],
        $13::integer[], $14::text[]
    ) AS b(event_id, request_id, user_id, service, model, input_tokens, output_tokens, images,
           free_tier, cost_usd, occurred_at, world_id, latency_ms, priority)
), new_ids AS (
    INSERT INTO usage_event_ids (event_id)
    SELECT event_id FROM batch
    ON CONFLICT DO NOTHING
    RETURNING event_id
), inserted AS (
    INSERT INTO usage_events (event_id, request_id, user_id, service, model, input_tokens,
                             output_tokens, images, free_tier, cost_usd, occurred_at, world_id,
                             latency_ms, priority)
    SELECT b.* FROM batch b JOIN new_ids USING (event_id)
    RETURNING *
), daily AS (
    INSERT INTO usage_daily AS t (user_id, day, service, model, requests, input_tokens,
                                  output_tokens, images, free_tier_requests, cost_usd)
    SELECT user_id, (occurred_at AT TIME ZONE 'UTC')::date, service, model, count(*),
           sum(input_tokens), sum(output_tokens), sum(images),
           count(*) FILTER (WHERE free_tier), sum(cost_usd)
    FROM inserted GROUP BY 1, 2, 3, 4
    ON CONFLICT (user_id, day, service, model) DO UPDATE SET
        requests = t.requests + EXCLUDED.requests,
        input_tokens = t.input_tokens + EXCLUDED.input_tokens,
        output_tokens = t.output_tokens + EXCLUDED.output_tokens,
        images = t.images + EXCLUDED.images,
        free_tier_requests = t.free_tier_requests + EXCLUDED.free_tier_requests,
        cost_usd = t.cost_usd + EXCLUDED.cost_usd
), monthly AS (
    INSERT INTO usage_monthly AS t (user_id, month, service, model, requests, input_tokens,
                                    output_tokens, images, free_tier_requests, cost_usd)
    SELECT user_id, date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date, service, model,
           count(*), sum(input_tokens), sum(output_tokens), sum(images),
           count(*) FILTER (WHERE free_tier), sum(cost_usd)
    FROM inserted GROUP BY 1, 2, 3, 4
    ON CONFLICT (user_id, month, service, model) DO UPDATE SET
        requests = t.requests + EXCLUDED.requests,
        input_tokens = t.input_tokens + EXCLUDED.input_tokens,
        output_tokens = t.output_tokens + EXCLUDED.output_tokens,
        images = t.images + EXCLUDED.images,
        free_tier_requests = t.free_tier_requests + EXCLUDED.free_tier_requests,
        cost_usd = t.cost_usd + EXCLUDED.cost_usd
), hourly AS (
    INSERT INTO usage_hourly_by_model AS t (hour, service, model, requests, input_tokens,
                                            output_tokens, images, free_tier_requests, cost_usd)
    SELECT date_trunc('hour', occurred_at), service, model, count(*), sum(input_tokens),
           sum(output_tokens), sum(images), count(*) FILTER (WHERE free_tier), sum(cost_usd)
    FROM inserted GROUP BY 1, 2, 3
    ON CONFLICT (hour, service, model) DO UPDATE SET
        requests = t.requests + EXCLUDED.requests,
        input_tokens = t.input_tokens + EXCLUDED.input_tokens,
        output_tokens = t.output_tokens + EXCLUDED.output_tokens,
        images = t.images + EXCLUDED.images,
        free_tier_requests = t.free_tier_requests + EXCLUDED.free_tier_requests,
        cost_usd = t.cost_usd + EXCLUDED.cost_usd
)
SELECT count(*) FROM inserted
"""


PricedUsage = tuple[UsageEvent, Decimal]
Connection = asyncpg.Connection | PoolConnectionProxy


def first_of_each_id(rows: Sequence[PricedUsage]) -> list[PricedUsage]:
    """A batch may hold one event twice (a producer retry); the ledger takes the first."""
    seen: set[str] = set()
    unique = []
    for event, cost in rows:
        if event.event_id not in seen:
            seen.add(event.event_id)
            unique.append((event, cost))
    return unique


class UsageLedger:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._months_ready: set[date] = set()

    async def _ensure_partitions(self, conn: Connection, months: set[date]) -> None:
        for month in sorted(months - self._months_ready):
            await conn.execute("SELECT scribe_ensure_month_partition('usage_events', $1)", month)
            self._months_ready.add(month)

    async def write(self, priced: Sequence[PricedUsage]) -> int:
        """Write a batch of (event, cost) pairs; return how many events were new."""
        rows = first_of_each_id(priced)
        months = {e.occurred_at.date().replace(day=1) for e, _ in rows}
        async with self.pool.acquire() as conn:
            await self._ensure_partitions(conn, months)
            async with conn.transaction():
                inserted: int = await conn.fetchval(
                    _WRITE_BATCH,
                    [e.event_id for e, _ in rows],
                    [e.request_id for e, _ in rows],
                    [e.user_id for e, _ in rows],
                    [e.service for e, _ in rows],
                    [e.model for e, _ in rows],
                    [e.input_tokens for e, _ in rows],
                    [e.output_tokens for e, _ in rows],
                    [e.images for e, _ in rows],
                    [e.free_tier for e, _ in rows],
                    [cost for _, cost in rows],
                    [e.occurred_at for e, _ in rows],
                    [e.world_id for e, _ in rows],
                    [e.latency_ms for e, _ in rows],
                    [e.priority.value if e.priority else None for e, _ in rows],
                )
        return inserted
