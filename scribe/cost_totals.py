"""Cost totals by service and model for the dashboard and Prometheus, read from the usage
rollups in PostgreSQL: the ledger is the one source of truth, so every worker exports the same
day and month totals, whichever partitions it owns (aggregate them with max, not sum)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal

import asyncpg
from prometheus_client import Gauge

from runtime.metrics import COST_MONTH_TO_DATE, COST_TODAY

TODAY_BY_MODEL = """
SELECT service, model, sum(cost_usd) FROM usage_daily WHERE day = $1 GROUP BY service, model
"""
MONTH_BY_MODEL = """
SELECT service, model, sum(cost_usd) FROM usage_monthly WHERE month = $1 GROUP BY service, model
"""

CostRow = tuple[str, str, Decimal]


def utc_day_and_month(now: datetime) -> tuple[date, date]:
    day = now.date()
    return day, day.replace(day=1)


def _set(gauge: Gauge, rows: Iterable[CostRow]) -> None:
    # clear() and the sets run with no await between them: no scrape sees a half-filled gauge.
    gauge.clear()
    for service, model, cost in rows:
        gauge.labels(service=service, model=model).set(float(cost))


def publish_cost_totals(today: Iterable[CostRow], month: Iterable[CostRow]) -> None:
    _set(COST_TODAY, today)
    _set(COST_MONTH_TO_DATE, month)


async def refresh_cost_totals(pool: asyncpg.Pool, now: datetime) -> None:
    day, month = utc_day_and_month(now)
    async with pool.acquire() as conn:
        today = await conn.fetch(TODAY_BY_MODEL, day)
        month_rows = await conn.fetch(MONTH_BY_MODEL, month)
    publish_cost_totals(
        [(r[0], r[1], r[2]) for r in today], [(r[0], r[1], r[2]) for r in month_rows]
    )
