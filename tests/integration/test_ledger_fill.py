"""The reads-at-scale bench's ledger fill (bench/ledger_fill.py), small: every event is in the
ledger and its dedupe guard, priced as the flow prices it; the daily, monthly and hourly rollups
equal the ledger's sums; and the cost report and budget check answer from them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal

import asyncpg
import pytest

from agents.usage.report import ReportPolicy, build_report
from bench.ledger_fill import fill_ledger, months_between, user_id
from schemas.model_catalog import load_catalog
from sinks.postgres import costs
from sinks.postgres.budgets import lock_budgets, refresh_budgets
from sinks.postgres.costs import CostInputs, load_cost_inputs, month_bounds
from sinks.postgres.migrate import migrate

pytestmark = pytest.mark.integration

EVENTS, USERS = 20_000, 40
# Months no other test writes, so the hourly rollup (not per user) sees only this fill's hours;
# the session's tests share one database (test_usage_partitions counts a 2019 month's rows).
MONTHS = months_between(date(2015, 3, 1), date(2015, 5, 1))
NOW = datetime(2015, 5, 20, tzinfo=UTC)  # the last month only partly filled, as today's is

_SUMS = """count(*)::bigint, sum(input_tokens)::bigint, sum(output_tokens)::bigint,
    sum(images)::bigint, (count(*) FILTER (WHERE free_tier))::bigint,
    coalesce(sum(images) FILTER (WHERE free_tier), 0)::bigint, sum(cost_usd)"""
_ROLLUP_SUMS = """sum(requests)::bigint, sum(input_tokens)::bigint, sum(output_tokens)::bigint,
    sum(images)::bigint, sum(free_tier_requests)::bigint, sum(free_tier_images)::bigint,
    sum(cost_usd)"""

# Rows in one side and not the other, both ways: empty when the rollup equals the ledger.
_MISMATCH = """
(({ledger}) EXCEPT ALL ({rollup})) UNION ALL (({rollup}) EXCEPT ALL ({ledger}))
"""


def mismatch(ledger: str, rollup: str) -> str:
    return _MISMATCH.format(ledger=ledger, rollup=rollup)


# The report's two shapes as two plain passes over the ledger, the reference its one-pass read
# (costs._SHAPES) must equal.
_HOURS = """
SELECT extract(hour FROM occurred_at AT TIME ZONE 'UTC')::int, priority, count(*), sum(cost_usd)
FROM usage_events WHERE occurred_at >= $1 AND occurred_at < $2 AND user_id = $3 GROUP BY 1, 2
"""
_SIMILAR = """
SELECT service, model, priority, size, count(*), sum(cost)
FROM (
    SELECT date_trunc('hour', occurred_at, 'UTC'), service, model, priority,
           count(*) AS size, sum(cost_usd) AS cost
    FROM usage_events WHERE occurred_at >= $1 AND occurred_at < $2 AND user_id = $3
    GROUP BY 1, 2, 3, 4
) AS per_hour
GROUP BY 1, 2, 3, 4
"""


async def assert_shapes_are_the_ledgers(pool: asyncpg.Pool, inputs: CostInputs, user: str) -> None:
    low, high = month_bounds(inputs.month)
    hours = [tuple(r) for r in await pool.fetch(_HOURS, low, high, user)]
    assert sorted(hours, key=str) == sorted(
        ((h.hour, h.priority, h.requests, h.cost_usd) for h in inputs.hours), key=str
    )
    similar = [tuple(r) for r in await pool.fetch(_SIMILAR, low, high, user)]
    assert sorted(similar, key=str) == sorted(
        ((g.service, g.model, g.priority, g.size, g.groups, g.cost_usd) for g in inputs.similar),
        key=str,
    )


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def test_the_fill_is_consistent_and_the_reads_answer(pool: asyncpg.Pool) -> None:
    run = f"fill{uuid.uuid4().hex[:6]}"
    users = f"{run}-u"
    await fill_ledger(pool, run, EVENTS, USERS, MONTHS, now=NOW)
    start, end = month_bounds(MONTHS[0])[0], NOW

    ledger = await pool.fetchrow(
        "SELECT count(*) AS events, count(DISTINCT user_id) AS users, "
        "min(occurred_at) AS first, max(occurred_at) AS last "
        "FROM usage_events WHERE starts_with(user_id, $1)",
        users,
    )
    assert ledger is not None
    assert ledger["events"] == EVENTS
    assert ledger["users"] == USERS
    assert start <= ledger["first"] and ledger["last"] < end
    guarded = await pool.fetchval(
        "SELECT count(*) FROM usage_event_ids g JOIN usage_events e USING (event_id) "
        "WHERE starts_with(e.user_id, $1) "
        "AND g.month = date_trunc('month', e.occurred_at AT TIME ZONE 'UTC')::date",
        users,
    )
    assert guarded == EVENTS

    # Priced as the flow prices: the catalog's price, nothing on the free tier.
    catalog = load_catalog()
    sample = await pool.fetch(
        "SELECT service, model, input_tokens, output_tokens, images, free_tier, cost_usd "
        "FROM usage_events WHERE starts_with(user_id, $1) LIMIT 500",
        users,
    )
    for row in sample:
        price = catalog.get(row["service"], row["model"])
        expected = (
            Decimal(0)
            if row["free_tier"]
            else price.cost(row["input_tokens"], row["output_tokens"], row["images"]).quantize(
                Decimal("1e-12")
            )
        )
        assert row["cost_usd"] == expected, dict(row)
    assert {r["free_tier"] for r in sample} == {True, False}

    scope = "starts_with(user_id, $1)"
    daily = await pool.fetch(
        mismatch(
            f"SELECT user_id, (occurred_at AT TIME ZONE 'UTC')::date, service, model, {_SUMS} "
            f"FROM usage_events WHERE {scope} GROUP BY 1, 2, 3, 4",
            f"SELECT user_id, day, service, model, {_ROLLUP_SUMS} FROM usage_daily "
            f"WHERE {scope} GROUP BY 1, 2, 3, 4",
        ),
        users,
    )
    assert daily == []
    monthly = await pool.fetch(
        mismatch(
            "SELECT user_id, date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date, "
            f"service, model, {_SUMS} FROM usage_events WHERE {scope} GROUP BY 1, 2, 3, 4",
            f"SELECT user_id, month, service, model, {_ROLLUP_SUMS} FROM usage_monthly "
            f"WHERE {scope} GROUP BY 1, 2, 3, 4",
        ),
        users,
    )
    assert monthly == []
    hourly = await pool.fetch(
        mismatch(
            f"SELECT date_trunc('hour', occurred_at, 'UTC'), service, model, {_SUMS} "
            "FROM usage_events WHERE occurred_at >= $1 AND occurred_at < $2 GROUP BY 1, 2, 3",
            f"SELECT hour, service, model, {_ROLLUP_SUMS} FROM usage_hourly_by_model "
            "WHERE hour >= $1 AND hour < $2 GROUP BY 1, 2, 3",
        ),
        start,
        end,
    )
    assert hourly == []
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM usage_monthly WHERE starts_with(user_id, $1)", users
        )
        > len(MONTHS) * USERS
    )

    # The reads: one user's report for each month, and the budget check.
    user = user_id(run, 3)
    for month in MONTHS:
        low, high = month_bounds(month)
        spent = await pool.fetchval(
            "SELECT sum(cost_usd) FROM usage_events WHERE user_id = $1 "
            "AND occurred_at >= $2 AND occurred_at < $3",
            user,
            low,
            high,
        )
        inputs = await load_cost_inputs(pool, month, user)
        await assert_shapes_are_the_ledgers(pool, inputs, user)
        report = build_report(inputs, catalog, ReportPolicy(), NOW)
        assert report.total_usd == spent
        assert sum(d.cost_usd for d in inputs.days) == spent
        assert sum(h.requests for h in inputs.hours) == sum(m.requests for m in inputs.models)

    # Migration 0400: the per-user ledger read needs no heap (index-only; the fill vacuumed),
    # and reads the ledger once.
    low, high = month_bounds(MONTHS[0])
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        plan = await conn.fetch(
            f"EXPLAIN (ANALYZE) {costs._scoped(costs._SHAPES, user, 3)}", low, high, user
        )
        text = "\n".join(row[0] for row in plan)
        assert text.count("Index Only Scan using usage_events_y2015m03_user_id_occurred_at") == 1
        assert "Heap Fetches: 0" in text, text

    month = MONTHS[-1]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO budgets (user_id, monthly_usd) VALUES ($1, 0.01)", user)
        assert await lock_budgets(conn, [user]) == [user]
        # Far above a cent: every threshold is due, once.
        assert await refresh_budgets(conn, [(user, month)], [50, 80, 100]) == (3, 0)
        assert await refresh_budgets(conn, [(user, month)], [50, 80, 100]) == (0, 0)
        await conn.execute("DELETE FROM budget_alerts WHERE user_id = $1", user)
        await conn.execute("DELETE FROM budgets WHERE user_id = $1", user)
