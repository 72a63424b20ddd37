"""Sustained usage events/s per worker into PostgreSQL, side by side with two baselines on the
same topic and the same events, in one run:

- raw aiokafka: one plain consumer reading the topic (no decode, no database): the ceiling;
- scribe worker: `scribe worker` (the usage batch consumer: decode, price, ledger + rollups +
  budgets in one transaction per batch, offsets committed after);
- Faust Table agent: an idiomatic per-event agent keeping the same daily sums in a Table
  (`bench/faust_table_sums.py`).

The events look like live traffic (1,000 users, the catalog's models plus one the producer
prices, timestamps within the last hour). They are published once; every run reads them from
offset 0 with a fresh consumer group, and the worker writes them into an emptied ledger, so
each run does the same work.

    .venv/bin/python bench/usage_throughput.py [--events 60000] [--runs 3]

Uses the services SCRIBE_*_URL name, or starts an embedded stack in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.usage.synthetic import synthetic_usage
from scribe.cli import prepare
from scribe.settings import Settings, kafka_bootstrap_servers
from scribe.stack.processes import free_port
from scribe.workers import new_worker, services_for_tests
from topics.catalog import USAGE_EVENTS

BENCH_DIR = Path(__file__).parent
LEDGER_TABLES = (
    "usage_event_ids",
    "usage_events",
    "usage_daily",
    "usage_monthly",
    "usage_hourly_by_model",
    "budget_alerts",
    "budget_state",
)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def publish_events(kafka_url: str, count: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap_servers(kafka_url), acks="all", linger_ms=5
    )
    await producer.start()
    try:
        futures = [
            await producer.send(USAGE_EVENTS.name, item.value, key=item.key)
            for item in synthetic_usage(
                f"bench-{uuid.uuid4().hex[:6]}", count, users=1000, within=timedelta(hours=1)
            )
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def raw_consumer_rate(kafka_url: str, count: int) -> float:
    consumer = AIOKafkaConsumer(
        USAGE_EVENTS.name,
        bootstrap_servers=kafka_bootstrap_servers(kafka_url),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen, first = 0, 0.0
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not first and batches:
                first = time.monotonic()
            seen += sum(len(messages) for messages in batches.values())
        return (seen - 1) / (time.monotonic() - first)
    finally:
        await consumer.stop()


async def empty_ledger(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"TRUNCATE {', '.join(LEDGER_TABLES)}")
    finally:
        await conn.close()


async def ledger_rate(database_url: str, count: int, timeout: float) -> float:
    """Events/s from the ledger's own clock: each batch's rows carry its transaction's start,
    so the rate is the events after the first batch over the first-to-last batch span."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval("SELECT count(*) FROM usage_event_ids") < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker did not store {count} events in {timeout} s")
            await asyncio.sleep(0.5)
        row = await conn.fetchrow(
            "SELECT min(ingested_at) AS first, max(ingested_at) AS last, "
            "count(*) FILTER (WHERE ingested_at = (SELECT max(ingested_at) FROM usage_events)) "
            "AS last_batch FROM usage_events"
        )
        assert row is not None
        span = (row["last"] - row["first"]).total_seconds()
        return float((count - row["last_batch"]) / span)
    finally:
        await conn.close()


def scribe_worker_rate(env: dict[str, str], state_dir: Path, count: int) -> float:
    asyncio.run(empty_ledger(env["SCRIBE_DATABASE_URL"]))
    worker = new_worker(env, state_dir / "workers").start()
    try:
        return asyncio.run(ledger_rate(env["SCRIBE_DATABASE_URL"], count, timeout=600))
    finally:
        worker.stop()


def faust_table_rate(env: dict[str, str], state_dir: Path, count: int) -> float:
    result = state_dir / f"faust-{uuid.uuid4().hex[:6]}.result"
    log = state_dir / "faust-table.log"
    app_id = f"bench-table-{uuid.uuid4().hex[:8]}"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                str(BENCH_DIR / "faust_table_sums.py"),
                app_id,
                str(free_port()),
                str(count),
                str(result),
            ],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 900
        while not result.exists() or not result.read_text().endswith("\n"):
            if process.poll() is not None:
                raise RuntimeError(f"the Faust table agent exited; see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Faust table agent did not finish; see {log}")
            time.sleep(0.5)
        events, seconds = result.read_text().split()
        return (int(events) - 1) / float(seconds)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def summarize(rates: dict[str, list[float]]) -> str:
    baseline = statistics.median(rates["raw aiokafka consumer"])
    lines = [
        f"{'approach':<28}{'min':>10}{'median':>10}{'max':>10}{'vs raw':>9}   events/s",
    ]
    for name, values in rates.items():
        median = statistics.median(values)
        lines.append(
            f"{name:<28}{min(values):>10,.0f}{median:>10,.0f}{max(values):>10,.0f}"
            f"{median / baseline:>9.3f}"
        )
    worker = statistics.median(rates["scribe worker -> PostgreSQL"])
    table = statistics.median(rates["Faust Table agent"])
    lines.append(f"\nscribe worker / Faust Table agent (medians): {worker / table:.1f}x")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scribe-bench-") as tmp:
        state_dir = Path(tmp)
        with services_for_tests(state_dir / "stack") as env:
            settings = Settings(
                kafka_url=env["SCRIBE_KAFKA_URL"],
                database_url=env["SCRIBE_DATABASE_URL"],
                redis_url=env["SCRIBE_REDIS_URL"],
            )
            asyncio.run(prepare(settings.require()))
            say(f"publishing {args.events:,} usage events ...")
            asyncio.run(publish_events(env["SCRIBE_KAFKA_URL"], args.events))
            approaches: dict[str, Callable[[], float]] = {
                "raw aiokafka consumer": lambda: asyncio.run(
                    raw_consumer_rate(env["SCRIBE_KAFKA_URL"], args.events)
                ),
                "scribe worker -> PostgreSQL": lambda: scribe_worker_rate(
                    env, state_dir, args.events
                ),
                "Faust Table agent": lambda: faust_table_rate(env, state_dir, args.events),
            }
            rates: dict[str, list[float]] = {name: [] for name in approaches}
            for run in range(1, args.runs + 1):
                for name, measure in approaches.items():
                    rate = measure()
                    rates[name].append(rate)
                    say(f"run {run}/{args.runs}: {name}: {rate:,.0f} events/s")
    table = summarize(rates)
    print(f"\n{args.events:,} usage events per run, {args.runs} runs, one worker each\n")
    print(table)
    results = BENCH_DIR / "results" / f"usage_throughput-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    results.write_text(json.dumps({"events": args.events, "rates": rates}, indent=2))
    say(f"\nresults in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
