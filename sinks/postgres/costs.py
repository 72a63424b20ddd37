"""Reads for the cost report: spend by model from `usage_monthly`, by day from `usage_daily`
(their primary keys lead with user_id; `usage_*_month` / `usage_daily_day` serve the whole
platform), and the hour-of-day and similar-request shapes from one pass over the month's
ledger partition (per user through `usage_events_user_time_covering`, index-only on vacuumed
months)."""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import asyncpg


@dataclass(frozen=True)
class ModelUsage:
    """One (service, model) of the month, summed over the report's scope."""

    service: str
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    images: int
    free_tier_requests: int
    free_tier_images: int
    cost_usd: Decimal


@dataclass(frozen=True)
class DayUsage:
    """One (day, service, model) of the month, summed over the report's scope."""

    day: date
    service: str
    model: str
    requests: int
    free_tier_requests: int
    cost_usd: Decimal


@dataclass(frozen=True)
class HourOfDayWork:
    """Requests of one priority in one UTC hour of the day, over the month."""

    hour: int
    priority: str | None
    requests: int
    cost_usd: Decimal


@dataclass(frozen=True)
class SimilarRequests:
    """`groups` times, one user sent `size` requests of one priority to one model within one
    clock hour; `cost_usd` is what those groups cost together."""

    service: str
    model: str
    priority: str | None
    size: int
    groups: int
    cost_usd: Decimal


@dataclass(frozen=True)
class CostInputs:
    month: date
    user_id: str | None  # None: every user
    models: Sequence[ModelUsage]
    days: Sequence[DayUsage]
    hours: Sequence[HourOfDayWork]
    similar: Sequence[SimilarRequests]
    budget_usd: Decimal | None = None


def month_bounds(month: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC month."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    days = calendar.monthrange(month.year, month.month)[1]
    return start, start + timedelta(days=days)


_MODELS = """
SELECT service, model,
       sum(requests)::bigint AS requests,
       sum(input_tokens)::bigint AS input_tokens,
       sum(output_tokens)::bigint AS output_tokens,
       sum(images)::bigint AS images,
       sum(free_tier_requests)::bigint AS free_tier_requests,
       sum(free_tier_images)::bigint AS free_tier_images,
       sum(cost_usd) AS cost_usd
FROM usage_monthly
WHERE month = $1 {user}
GROUP BY service, model
"""

_DAYS = """
SELECT day, service, model, sum(requests)::bigint AS requests,
       sum(free_tier_requests)::bigint AS free_tier_requests, sum(cost_usd) AS cost_usd
FROM usage_daily
WHERE day >= $1 AND day < $2 {user}
GROUP BY day, service, model
"""

# Both shapes of the month's work in one pass over the ledger: each user's (UTC clock hour,
# model, priority) groups, then summed by hour of day and counted by size. A heavy user's month
# is tens of thousands of index entries, and two passes cost twice the scan. `date_bin` from a
# UTC midnight is the UTC hour by arithmetic alone; `date_trunc` in a time zone converts each row.
_SHAPES = """
WITH per_user_hour AS MATERIALIZED (
    SELECT date_bin('1 hour', occurred_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour,
           service, model, priority, count(*) AS size, sum(cost_usd) AS cost
    FROM usage_events
    WHERE occurred_at >= $1 AND occurred_at < $2 {user}
    GROUP BY user_id, 1, 2, 3, 4
)
SELECT extract(hour FROM hour AT TIME ZONE 'UTC')::int AS hour, NULL::text AS service,
       NULL::text AS model, priority, NULL::bigint AS size, sum(size)::bigint AS requests,
       sum(cost) AS cost_usd
FROM per_user_hour
GROUP BY 1, 4
UNION ALL
SELECT NULL, service, model, priority, size, count(*), sum(cost)
FROM per_user_hour
GROUP BY 2, 3, 4, 5
"""


def _scoped(sql: str, user_id: str | None, parameter: int) -> str:
    # Two plans rather than `($n IS NULL OR user_id = $n)`, which no index can serve.
    return sql.format(user="" if user_id is None else f"AND user_id = ${parameter}")


async def load_cost_inputs(pool: asyncpg.Pool, month: date, user_id: str | None) -> CostInputs:
    start, end = month_bounds(month)
    user_args = [] if user_id is None else [user_id]
    async with pool.acquire() as conn:
        models = await conn.fetch(_scoped(_MODELS, user_id, 2), month, *user_args)
        days = await conn.fetch(_scoped(_DAYS, user_id, 3), start.date(), end.date(), *user_args)
        shapes = await conn.fetch(_scoped(_SHAPES, user_id, 3), start, end, *user_args)
        budget = (
            None
            if user_id is None
            else await conn.fetchval("SELECT monthly_usd FROM budgets WHERE user_id = $1", user_id)
        )
    return CostInputs(
        month=month,
        user_id=user_id,
        models=[ModelUsage(**dict(r)) for r in models],
        days=[DayUsage(**dict(r)) for r in days],
        hours=[
            HourOfDayWork(r["hour"], r["priority"], r["requests"], r["cost_usd"])
            for r in shapes
            if r["hour"] is not None
        ],
        similar=[
            SimilarRequests(
                r["service"], r["model"], r["priority"], r["size"], r["requests"], r["cost_usd"]
            )
            for r in shapes
            if r["hour"] is None
        ],
        budget_usd=budget,
    )
