"""Benchmark: the cost report and the budget check over a year of usage.

    .venv/bin/python bench/reads_at_scale.py --events 10000000 --users 1000 --calls 500

Starts the embedded stack (or uses SCRIBE_*_URL), fills the usage ledger, its dedupe guard and
the daily, monthly and hourly rollups with `--events` events of `--users` users over the last
`--months` months (`bench/ledger_fill.py`, generated inside PostgreSQL; a progress line per
chunk), gives every user a monthly budget, then measures, each over `--calls` calls of randomly
chosen users and months (after 20 warm-up calls):

- `report_function`: what `scribe costs report --user` runs once connected: `load_cost_inputs`
  and `build_report` (the statements in `sinks/postgres/costs.py`);
- `report_http`: `GET /costs/report?user=&month=` on a `scribe worker`, over HTTP;
- `budget_check`: the flow's per-batch budget check for one user (`lock_budgets` and
  `refresh_budgets` in a transaction, rolled back so nothing piles up), and `budget_check_batch`
  the same for every user at once, as a 10,000-event batch of this traffic touches them all;
- `report_cli`: `--cli-runs` real `scribe costs report --user --json` processes, end to end
  (interpreter start, imports, migration check, connect, report);
- `report_all_users`: the platform-wide report (`scribe costs report` without --user), a few
  calls, for scale only: the seed's target is about the per-user report.

Then `EXPLAIN (ANALYZE, BUFFERS)` of each statement for one user and month. Figures and plans
go to stdout and bench/results/reads_at_scale-*.json.

`--keep DIR` keeps the stack (and so the fill) in DIR; `--reuse RUN` measures an earlier fill
of that run id there (with SCRIBE_STATE_DIR=DIR and `scribe stack up`, or SCRIBE_*_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from agents.usage.report import ReportPolicy, build_report, report_json
from bench.ledger_fill import fill_ledger, months_between, table_sizes, user_id
from devkit.harness import SERVICE_VARS, new_worker, services_for_tests
from runtime.settings import UsageSettings
from schemas.model_catalog import load_catalog
from sinks.postgres import budgets, costs
from sinks.postgres.budgets import lock_budgets, refresh_budgets
from sinks.postgres.costs import load_cost_inputs, month_bounds
from sinks.postgres.migrate import migrate
from sinks.postgres.usage import add_months

RESULTS = Path(__file__).parent / "results"
WARM_UP = 20
THRESHOLDS = list(UsageSettings().alert_thresholds_pct)


def say(line: str) -> None:
    print(f"[reads {datetime.now():%H:%M:%S}] {line}", file=sys.stderr, flush=True)


def percentile(values: list[float], share: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


def summary(name: str, seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    row = {
        "read": name,
        "calls": len(ms),
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
    }
    say(f"{name}: {row['calls']} calls, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms")
    return row


async def timed(calls: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    for _ in range(min(WARM_UP, calls)):
        await call()
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        seconds.append(time.perf_counter() - started)
    return seconds


@contextmanager
def stack(keep: Path | None) -> Iterator[tuple[dict[str, str], Path]]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        with services_for_tests(keep / "stack") as env:
            yield env, keep
        return
    with (
        tempfile.TemporaryDirectory(prefix="scribe-reads-") as tmp,
        services_for_tests(Path(tmp) / "stack") as env,
    ):
        yield env, Path(tmp)


class Reads:
    def __init__(self, pool: asyncpg.Pool, run: str, users: int, months: list[date]) -> None:
        self.pool = pool
        self.run = run
        self.users = users
        self.months = months
        self.rng = random.Random(7)
        self.catalog = load_catalog()
        self.policy = ReportPolicy()

    def pick(self) -> tuple[str, date]:
        return user_id(self.run, self.rng.randrange(self.users)), self.rng.choice(self.months)

    async def report_function(self) -> None:
        user, month = self.pick()
        inputs = await load_cost_inputs(self.pool, month, user)
        report_json(build_report(inputs, self.catalog, self.policy, datetime.now(UTC)))

    async def budget_check(self, users: list[str]) -> None:
        month = self.months[-1]
        async with self.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                budgeted = await lock_budgets(conn, users)
                await refresh_budgets(conn, [(u, month) for u in budgeted], THRESHOLDS)
            finally:
                await transaction.rollback()

    async def one_user_budget_check(self) -> None:
        await self.budget_check([self.pick()[0]])

    async def all_users_budget_check(self) -> None:
        await self.budget_check(sorted(user_id(self.run, n) for n in range(self.users)))


async def set_budgets(pool: asyncpg.Pool, run: str, users: int) -> None:
    """A monthly budget per user, around what a user spends, so some thresholds are reached."""
    await pool.execute(
        "INSERT INTO budgets (user_id, monthly_usd) "
        "SELECT $1 || '-u' || n, 5 + n % 40 FROM generate_series(0, $2 - 1) AS n "
        "ON CONFLICT (user_id) DO NOTHING",
        run,
        users,
    )


async def explain_all(pool: asyncpg.Pool, user: str, month: date) -> str:
    start, end = month_bounds(month)
    statements: list[tuple[str, str, list[Any]]] = [
        ("by model (usage_monthly)", costs._scoped(costs._MODELS, user, 2), [month, user]),
        (
            "by day (usage_daily)",
            costs._scoped(costs._DAYS, user, 3),
            [start.date(), end.date(), user],
        ),
        (
            "hour of day and similar requests, one pass (ledger)",
            costs._scoped(costs._SHAPES, user, 3),
            [start, end, user],
        ),
        ("budget", "SELECT monthly_usd FROM budgets WHERE user_id = $1", [user]),
    ]
    out = []
    async with pool.acquire() as conn:
        # The plan a prepared statement settles on after five runs, the generic one: partitions
        # are then pruned when it runs ("Subplans Removed"), not when it is planned.
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        for index, (title, sql, args) in enumerate(statements):
            name = f"reads_bench_{index}"
            await conn.execute(f"PREPARE {name} AS {sql}")
            # EXPLAIN takes no bound parameters: the values as literals of the inferred types.
            values = ", ".join(_literal(arg) for arg in args)
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE {name}({values})")
            await conn.execute(f"DEALLOCATE {name}")
            out.append(f"== {title}, user {user}, {month:%Y-%m}\n" + _plan(rows))
        await conn.execute("RESET plan_cache_mode")
        # The budget check writes alert and state rows: rolled back.
        transaction = conn.transaction()
        await transaction.start()
        try:
            rows = await conn.fetch(
                f"EXPLAIN (ANALYZE, BUFFERS) {budgets._REFRESH}", [user], [month], THRESHOLDS
            )
        finally:
            await transaction.rollback()
        out.append(f"== budget check (refresh_budgets), user {user}, {month:%Y-%m}\n" + _plan(rows))
    return "\n".join(out)


def _literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _plan(rows: list[asyncpg.Record]) -> str:
    return "\n".join(r[0] for r in rows) + "\n"


async def http_reads(url: str, reads: Reads, calls: int) -> list[float]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def call() -> None:
            user, month = reads.pick()
            response = await client.get(
                "/costs/report", params={"user": user, "month": f"{month:%Y-%m}"}
            )
            response.raise_for_status()

        return await timed(calls, call)


def cli_runs(env: dict[str, str], reads: Reads, runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        user, month = reads.pick()
        started = time.perf_counter()
        subprocess.run(
            [
                *(sys.executable, "-m", "scribe", "costs", "report"),
                *("--user", user, "--month", f"{month:%Y-%m}", "--json"),
            ],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        seconds.append(time.perf_counter() - started)
    return seconds


async def measure(args: argparse.Namespace, env: dict[str, str], state_dir: Path) -> int:
    url = env["SCRIBE_DATABASE_URL"]
    await migrate(url)
    now = datetime.now(UTC)
    months = months_between(add_months(now.date().replace(day=1), 1 - args.months), now.date())
    run = args.reuse or f"reads-{uuid.uuid4().hex[:6]}"
    result: dict[str, Any] = {
        "run": run,
        "events": args.events,
        "users": args.users,
        "months": [f"{m:%Y-%m}" for m in months],
        "cpus": os.cpu_count(),
    }
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        if not args.reuse:
            say(f"filling {args.events:,} events of {args.users:,} users over {len(months)} months")
            filled = await fill_ledger(pool, run, args.events, args.users, months, now=now, say=say)
            result["fill_seconds"] = {
                "ledger": round(filled.ledger_seconds, 1),
                "rollups": round(filled.rollup_seconds, 1),
                "vacuum_analyze": round(filled.vacuum_seconds, 1),
            }
            say(f"filled in {sum(result['fill_seconds'].values()):,.0f} s")
        else:
            result["events"] = await pool.fetchval(
                "SELECT count(*) FROM usage_events WHERE starts_with(user_id, $1)", f"{run}-u"
            )
        await set_budgets(pool, run, args.users)
        sizes = await table_sizes(pool)
        result["table_mb"] = {name: round(size / 2**20) for name, size in sizes.items()}
        say(f"table sizes (MB): {result['table_mb']}")
        reads = Reads(pool, run, args.users, months)
        rows = [
            summary("report_function", await timed(args.calls, reads.report_function)),
            summary("budget_check", await timed(args.calls, reads.one_user_budget_check)),
            summary(
                "budget_check_batch",
                await timed(max(args.calls // 10, 5), reads.all_users_budget_check),
            ),
        ]
        worker = new_worker(env, state_dir / "worker").start()
        try:
            rows.append(summary("report_http", await http_reads(worker.url, reads, args.calls)))
        finally:
            worker.stop()
        rows.append(summary("report_cli", cli_runs(env, reads, args.cli_runs)))

        async def all_users() -> None:
            await load_cost_inputs(pool, reads.pick()[1], None)

        rows.append(summary("report_all_users", await timed(3, all_users)))
        result["reads"] = rows
        user, month = reads.pick()
        plans = await explain_all(pool, user, month)
    finally:
        await pool.close()
    print(plans)
    print(json.dumps(result, indent=2))
    result["explain"] = plans
    RESULTS.mkdir(exist_ok=True)
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    (RESULTS / f"reads_at_scale-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="keep the stack and its fill in this directory")
    parser.add_argument("--reuse", help="measure the earlier fill of this run id; no new fill")
    args = parser.parse_args(argv)
    if args.events < 1 or args.users < 1 or args.months < 1 or args.calls < 1:
        parser.error("--events, --users, --months and --calls must be positive")
    given = all(os.environ.get(name) for name in SERVICE_VARS)
    with stack(None if given else args.keep) as (env, state_dir):
        return asyncio.run(measure(args, env, state_dir))


if __name__ == "__main__":
    sys.exit(main())
