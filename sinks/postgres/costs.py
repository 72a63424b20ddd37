"""Reads for the cost report: spend by model from `usage_monthly`, by day from `usage_daily`
(their primary keys lead with user_id; `usage_*_month` / `usage_daily_day` serve the whole
platform), and the hour-of-day and similar-request shapes from the month's ledger partition
(per user through `usage_events_user_time_covering`, index-only on vacuumed months)."""

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

_HOURS = """
SELECT extract(hour FROM occurred_at AT TIME ZONE 'UTC')::int AS hour, priority,
       count(*) AS requests, sum(cost_usd) AS cost_usd
FROM usage_events
WHERE occurred_at >= $1 AND occurred_at < $2 {user}
GROUP BY 1, 2
"""

_SIMILAR = """
SELECT service, model, priority, size, count(*) AS groups, sum(cost) AS cost_usd
FROM (
    SELECT user_id, date_trunc('hour', occurred_at, 'UTC'), service, model, priority,
           count(*) AS size, sum(cost_usd) AS cost
    FROM usage_events
    WHERE occurred_at >= $1 AND occurred_at < $2 {user}
    GROUP BY 1, 2, 3, 4, 5
) AS per_user_hour
GROUP BY 1, 2, 3, 4
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
        hours = await conn.fetch(_scoped(_HOURS, user_id, 3), start, end, *user_args)
        similar = await conn.fetch(_scoped(_SIMILAR, user_id, 3), start, end, *user_args)
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
        hours=[HourOfDayWork(**dict(r)) for r in hours],
        similar=[SimilarRequests(**dict(r)) for r in similar],
        budget_usd=budget,
    )
