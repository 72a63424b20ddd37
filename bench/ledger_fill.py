"""Fill the usage ledger with a long history, fast, for measuring the reads at scale.

The events are generated inside PostgreSQL (`generate_series`, chunk by chunk), in time order
over the months asked for, for users `<run>-u<n>` spread evenly, across the catalog's models,
priced from the catalog as the flow prices them (free tier: nothing). Each chunk's rows go to
the ledger and its dedupe guard (`usage_event_ids`) in one statement; the month partitions are
made first by the ledger's own `ensure_months`. The rollups are then built from the ledger,
month by month, with the flow's own upsert statements (`ROLLUP_UPSERTS`), so they equal the
ledger's sums by construction, and the tables are vacuumed and analyzed as autovacuum would
leave them. Nothing passes through Python but the chunk bounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import asyncpg

from schemas.model_catalog import load_catalog
from sinks.postgres.costs import month_bounds
from sinks.postgres.usage import ROLLUP_UPSERTS, UsageLedger

CHUNK = 250_000
LEDGER_TABLES = (
    "usage_events",
    "usage_event_ids",
    "usage_daily",
    "usage_monthly",
    "usage_hourly_by_model",
)

# $1 run, $2..$3 the chunk's event numbers, $4 users, $5 events in all, $6 first moment,
# $7 span, $8.. the catalog as arrays. Event n's moment is n's share of the span plus jitter
# within one event's slot, so the ledger is written in time order as the flow writes it.
_FILL_CHUNK = """
WITH catalog AS (
    SELECT * FROM unnest($8::text[], $9::text[], $10::boolean[], $11::boolean[],
                         $12::numeric[], $13::numeric[], $14::numeric[], $15::text[])
         WITH ORDINALITY AS c(service, model, is_image, free, input_per_mtok, output_per_mtok,
                              per_image, catalog_version, idx)
), drawn AS (
    SELECT n, floor(random() * $4)::int AS u, 1 + floor(random() * cardinality($8))::int AS m,
           $6::timestamptz + $7::interval * ((n - 1 + random()) / $5) AS occurred_at,
           random() AS r_in, random() AS r_out, random() AS r_free, random() AS r_priority,
           random() AS r_world
    FROM generate_series($2::bigint, $3::bigint) AS n
), events AS (
    SELECT d.n, d.u, d.occurred_at, d.r_priority, d.r_world, c.service, c.model,
           c.catalog_version, c.input_per_mtok, c.output_per_mtok, c.per_image,
           floor(d.r_in * 8001)::bigint AS input_tokens,
           CASE WHEN c.is_image THEN 0 ELSE floor(d.r_out * 4001)::bigint END AS output_tokens,
           CASE WHEN c.is_image THEN 1 + floor(d.r_out * 4)::int ELSE 0 END AS images,
           c.free OR d.r_free < 0.1 AS free_tier
    FROM drawn d JOIN catalog c ON c.idx = d.m
), inserted AS (
    INSERT INTO usage_events (event_id, request_id, user_id, service, model, input_tokens,
                              output_tokens, images, free_tier, cost_usd, occurred_at, world_id,
                              latency_ms, priority, price_catalog_version)
    SELECT $1 || '-' || n, 'req-' || $1 || '-' || n, $1 || '-u' || u, service, model,
           input_tokens, output_tokens, images, free_tier,
           CASE WHEN free_tier THEN 0
                ELSE round(input_per_mtok * input_tokens / 1000000
                           + output_per_mtok * output_tokens / 1000000
                           + per_image * images, 12) END,
           occurred_at,
           CASE WHEN r_world < 0.3 THEN 'world-' || floor(r_world * 1000)::int % 50 END,
           CASE WHEN r_world < 0.3 THEN 50 + floor(r_world * 100000)::int END,
           (ARRAY['urgent', 'high', 'normal', 'low', 'background', NULL])
               [1 + floor(r_priority * 6)::int],
           catalog_version
    FROM events
    RETURNING event_id, occurred_at
)
INSERT INTO usage_event_ids (event_id, month)
SELECT event_id, date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date FROM inserted
"""

# $1 month start, $2 month end, $3 the run's user prefix: the run's ledger rows of one month
# as the `inserted` CTE the flow's rollup upserts read.
_ROLLUP_MONTH = f"""
WITH inserted AS (
    SELECT user_id, service, model, input_tokens, output_tokens, images, free_tier, cost_usd,
           occurred_at
    FROM usage_events
    WHERE occurred_at >= $1 AND occurred_at < $2 AND starts_with(user_id, $3)
), daily AS ({ROLLUP_UPSERTS["daily"]}), monthly AS ({ROLLUP_UPSERTS["monthly"]})
{ROLLUP_UPSERTS["hourly"]}
"""


@dataclass(frozen=True)
class FillResult:
    events: int
    ledger_seconds: float
    rollup_seconds: float
    vacuum_seconds: float


def user_id(run: str, n: int) -> str:
    return f"{run}-u{n}"


def months_between(first: date, last: date) -> list[date]:
    months = [first.replace(day=1)]
    while months[-1] < last.replace(day=1):
        m = months[-1]
        months.append(date(m.year + m.month // 12, m.month % 12 + 1, 1))
    return months


def _catalog_arrays() -> list[list[object]]:
    catalog = load_catalog()
    models = catalog.models
    return [
        [m.service for m in models],
        [m.model for m in models],
        [m.kind == "image" for m in models],
        [m.free for m in models],
        [m.input_per_mtok for m in models],
        [m.output_per_mtok for m in models],
        [m.per_image for m in models],
        [catalog.version] * len(models),
    ]


async def fill_ledger(
    pool: asyncpg.Pool,
    run: str,
    events: int,
    users: int,
    months: Sequence[date],
    *,
    now: datetime | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> FillResult:
    """`events` events of `users` users over `months` (the current one only up to `now`),
    then the rollups and a VACUUM ANALYZE of the ledger tables."""
    now = now or datetime.now(UTC)
    start = month_bounds(months[0])[0]
    end = min(month_bounds(months[-1])[1], now)
    await UsageLedger(pool, []).ensure_months(set(months))
    catalog = _catalog_arrays()
    started = time.monotonic()
    async with pool.acquire() as conn:
        # A bulk load: losing its last commits in a crash only means filling again.
        await conn.execute("SET synchronous_commit = off")
        for first in range(1, events + 1, CHUNK):
            last = min(first + CHUNK - 1, events)
            await conn.execute(
                _FILL_CHUNK, run, first, last, users, events, start, end - start, *catalog
            )
            elapsed = time.monotonic() - started
            rate = last / elapsed
            say(
                f"ledger: {last:,} / {events:,} events ({rate:,.0f}/s, "
                f"{(events - last) / rate:,.0f} s to go)"
            )
        ledger_s = time.monotonic() - started
        started = time.monotonic()
        for month in months:
            low, high = month_bounds(month)
            await conn.execute(_ROLLUP_MONTH, low, high, f"{run}-u")
            say(f"rollups: {month:%Y-%m} done ({time.monotonic() - started:,.0f} s)")
        rollup_s = time.monotonic() - started
        started = time.monotonic()
        # The filled months' partitions only: the other months are not this fill's.
        partitions = [f"usage_events_y{m:%Y}m{m:%m}" for m in months]
        for table in [*partitions, *LEDGER_TABLES[1:]]:
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        vacuum_s = time.monotonic() - started
        say(f"vacuum analyze: {vacuum_s:,.0f} s")
    return FillResult(events, ledger_s, rollup_s, vacuum_s)


async def table_sizes(pool: asyncpg.Pool) -> dict[str, int]:
    """Bytes on disk (heap, indexes, TOAST) of each ledger table, partitions included."""
    sizes = {}
    for table in LEDGER_TABLES:
        sizes[table] = await pool.fetchval(
            # pg_partition_tree lists nothing for a table that is not partitioned.
            "SELECT coalesce(sum(pg_total_relation_size(relid)), "
            "                pg_total_relation_size($1::regclass))::bigint "
            "FROM pg_partition_tree($1::regclass)",
            table,
        )
    return sizes
