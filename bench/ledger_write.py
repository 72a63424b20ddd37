"""Benchmark: the usage ledger's write alone, PostgreSQL's side of the usage flow.

    .venv/bin/python -m bench.ledger_write --events 100000 --runs 3 --explain

Writes `--events` live-like usage events (1,000 users, the last hour; the same generator as the
usage bench) through `UsageLedger.write` in batches of `--batch`, into emptied ledger tables, as
the usage flow does, with no Kafka and no worker. Each run prints the write's wall time per event,
the CPU the PostgreSQL backend spent per event (on the embedded server), and
how many rollup updates were HOT (the new row version on the old one's page: no index entry).
`--explain` prints `EXPLAIN (ANALYZE)` of the ledger statement for one batch past the first half,
where the rollups hold most of their keys. `--before-0500` gives the rollup tables PostgreSQL's
default fill factor (100) again, as before migration 0500 (which gives 50), to compare.

The embedded PostgreSQL (`fsync=off`), or `--database-url`: a database of your own whose usage
tables it empties (TRUNCATE) before each run, so never one whose ledger you keep.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg

from agents.usage.flow import priced
from agents.usage.pricing import UsageLimits
from agents.usage.synthetic import synthetic_usage
from bench.cases.usage import empty_ledger
from bench.processes import tree_cpu_seconds
from devkit.stack import LocalStack
from runtime.source import Record
from schemas.model_catalog import load_catalog
from sinks.postgres import usage
from sinks.postgres.migrate import migrate
from sinks.postgres.usage import PricedUsage, UsageLedger
from topics.catalog import USAGE_EVENTS

ROLLUPS = ("usage_daily", "usage_monthly", "usage_hourly_by_model")
# Migration 0500 undone; on the embedded server only. The tables are empty when it runs, so every
# page written afterwards is filled as before.
BEFORE_0500 = (
    "ALTER TABLE usage_daily RESET (fillfactor); "
    "ALTER TABLE usage_monthly RESET (fillfactor); "
    "ALTER TABLE usage_hourly_by_model RESET (fillfactor)"
)
THRESHOLDS = (50, 80, 100)


def say(line: str) -> None:
    print(f"[ledger {datetime.now():%H:%M:%S}] {line}", file=sys.stderr, flush=True)


@contextmanager
def database(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    with (
        tempfile.TemporaryDirectory(prefix="scribe-ledger-") as tmp,
        LocalStack(Path(tmp), broker=None).running() as env,
    ):
        yield env["SCRIBE_DATABASE_URL"]


def priced_events(count: int) -> list[PricedUsage]:
    """The events decoded and priced as the usage flow does (the generator makes none it
    refuses)."""
    decode_and_price = priced(load_catalog(), UsageLimits())
    made = synthetic_usage(
        f"ledger-{uuid.uuid4().hex[:6]}", count, users=1000, within=timedelta(hours=1)
    )
    rows = []
    for offset, item in enumerate(made):
        outcome = decode_and_price(Record(USAGE_EVENTS.name, 0, offset, item.key, item.value))
        if isinstance(outcome, PricedUsage):
            rows.append(outcome)
    return rows


async def rollup_updates(conn: usage.Connection) -> tuple[int, int]:
    """(updates, HOT updates) of the rollup tables so far, this backend's pending counts
    included."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await asyncio.sleep(0.05)  # the backend flushes once idle
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    updates, hot = await conn.fetchrow(
        "SELECT coalesce(sum(n_tup_upd), 0), coalesce(sum(n_tup_hot_upd), 0) "
        "FROM pg_stat_user_tables WHERE relname = ANY($1)",
        list(ROLLUPS),
    ) or (0, 0)
    return int(updates), int(hot)


async def one_run(
    pool: asyncpg.Pool, rows: list[PricedUsage], args: argparse.Namespace
) -> dict[str, float]:
    async with pool.acquire() as conn:
        await empty_ledger(conn)
        if args.before_0500:
            await conn.execute(BEFORE_0500)
        await conn.execute("CHECKPOINT")
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        updates_before, hot_before = await rollup_updates(conn)
    ledger = UsageLedger(pool, THRESHOLDS)
    batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
    explain_at = len(batches) // 2 if args.explain else -1
    wall: list[float] = []
    cpu = 0.0
    for index, batch in enumerate(batches):
        if index == explain_at:
            await explain(pool, batch)
            continue
        cpu_before = tree_cpu_seconds([backend])
        started = time.perf_counter()
        await ledger.write(batch)
        wall.append(time.perf_counter() - started)
        cpu += tree_cpu_seconds([backend]) - cpu_before
    async with pool.acquire() as conn:
        updates_after, hot_after = await rollup_updates(conn)
    written = sum(len(b) for i, b in enumerate(batches) if i != explain_at)
    updates = updates_after - updates_before
    result = {
        "events": written,
        "wall_us_per_event": 1e6 * sum(wall) / written,
        "batch_ms_median": 1e3 * statistics.median(wall),
        "rollup_updates": updates,
        "rollup_hot_share": (hot_after - hot_before) / updates if updates else 0.0,
    }
    if args.database_url is None:  # the backend is a process of this machine
        result["backend_cpu_us_per_event"] = 1e6 * cpu / written
    return result


async def explain(pool: asyncpg.Pool, batch: list[PricedUsage]) -> None:
    """The ledger statement of one batch under EXPLAIN ANALYZE (its writes are kept)."""
    async with pool.acquire() as conn, conn.transaction():
        await usage.stage(conn, batch)
        plan = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + usage._WRITE_FROM_STAGE)
    print("\n".join(line[0] for line in plan), flush=True)


async def measure(url: str, args: argparse.Namespace) -> None:
    await migrate(url)
    say(f"pricing {args.events:,} events ...")
    rows = priced_events(args.events)
    # One connection: the backend whose CPU is read is the one that writes.
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        for run in range(1, args.runs + 1):
            result = await one_run(pool, rows, args)
            cpu = result.get("backend_cpu_us_per_event")
            print(
                f"run {run}/{args.runs}: {result['wall_us_per_event']:.1f} us per event "
                f"written (batch median {result['batch_ms_median']:.0f} ms), PostgreSQL backend "
                + (f"{cpu:.1f} us of CPU per event" if cpu is not None else "CPU not readable")
                + f"; rollup updates {result['rollup_updates']:,.0f}, "
                f"{100 * result['rollup_hot_share']:.0f} % HOT",
                flush=True,
            )
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--database-url", help="a database whose usage tables may be emptied")
    parser.add_argument(
        "--before-0500",
        action="store_true",
        help="the rollup tables at PostgreSQL's default fill factor (embedded server only)",
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.batch < 1 or args.runs < 1:
        parser.error("--events, --batch and --runs must be positive")
    if args.before_0500 and args.database_url:
        parser.error("--before-0500 alters the tables: only on the embedded PostgreSQL")
    if args.explain and args.events <= args.batch:
        parser.error("--explain needs two batches or more: one of them is explained")
    with database(args.database_url) as url:
        asyncio.run(measure(url, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
