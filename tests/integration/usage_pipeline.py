"""What the usage integration tests share: publishing raw usage with its offsets, waiting for
a consumer group to commit past them, and the rollups expected from what was published."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer, TopicPartition

from agents.usage.synthetic import SyntheticUsage
from devkit.harness import group_offsets
from runtime.settings import kafka_bootstrap_servers
from schemas.model_catalog import load_catalog
from topics.catalog import USAGE_EVENTS

MILLION = Decimal(1_000_000)
TWELVE_PLACES = Decimal("1e-12")

# requests, input_tokens, output_tokens, images, free_tier_requests, free_tier_images, cost_usd
Measures = tuple[Any, ...]
MEASURES_SQL = (
    "requests, input_tokens, output_tokens, images, free_tier_requests, free_tier_images, cost_usd"
)


async def publish(kafka_url: str, items: Iterable[SyntheticUsage]) -> dict[int, int]:
    """Publish to usage.events, acknowledged; return the last offset written per partition."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap_servers(kafka_url),
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(USAGE_EVENTS.name, item.value, key=item.key) for item in items
        ]
        last: dict[int, int] = {}
        for metadata in await asyncio.gather(*futures):
            last[metadata.partition] = max(last.get(metadata.partition, -1), metadata.offset)
        return last
    finally:
        await producer.stop()


async def committed(kafka_url: str, group: str, partitions: Iterable[int]) -> dict[int, int]:
    async with group_offsets(kafka_url, group) as consumer:
        result = {}
        for partition in partitions:
            offset = await consumer.committed(TopicPartition(USAGE_EVENTS.name, partition))
            result[partition] = -1 if offset is None else offset
        return result


async def wait_committed_past(
    kafka_url: str, group: str, last_offsets: dict[int, int], timeout: float, log: Any = None
) -> None:
    """Until `group` has committed beyond every offset in `last_offsets`; prints progress."""
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 10
    while True:
        done = await committed(kafka_url, group, last_offsets)
        if all(done[p] > offset for p, offset in last_offsets.items()):
            return
        if time.monotonic() > deadline:
            tail = log() if log else ""
            raise AssertionError(
                f"group {group} committed {done}, not past {last_offsets} after {timeout} s\n{tail}"
            )
        if time.monotonic() > next_report:
            print(f"  waiting for {group}: committed {done}, target {last_offsets}", flush=True)
            next_report += 10
        await asyncio.sleep(0.5)


def expected_cost(fields: dict[str, Any]) -> Decimal:
    """From the published fields and the catalog's list prices, rounded to the ledger's
    12 places; not through the pipeline's own pricing code."""
    if "cost_usd" in fields:
        return Decimal(fields["cost_usd"])
    if fields["free_tier"]:
        return Decimal(0)
    price = load_catalog().get(fields["service"], fields["model"])
    raw: Decimal = (
        price.input_per_mtok * fields["input_tokens"] / MILLION
        + price.output_per_mtok * fields["output_tokens"] / MILLION
        + price.per_image * fields["images"]
    )
    return raw.quantize(TWELVE_PLACES, rounding=ROUND_HALF_EVEN)


def _add(total: list[Any], fields: dict[str, Any]) -> None:
    free = fields["free_tier"]
    total[0] += 1
    total[1] += fields["input_tokens"]
    total[2] += fields["output_tokens"]
    total[3] += fields["images"]
    total[4] += 1 if free else 0
    total[5] += fields["images"] if free else 0
    total[6] += expected_cost(fields)


def expected_rollups(
    published: Iterable[dict[str, Any]],
) -> tuple[dict[tuple[Any, ...], Measures], ...]:
    """(daily, monthly, hourly) as the exact sums of the distinct published events."""
    daily: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0, Decimal(0)])
    monthly: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0, Decimal(0)])
    hourly: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0, Decimal(0)])
    for fields in published:
        at: datetime = fields["occurred_at"].astimezone(UTC)
        user, service, model = fields["user_id"], fields["service"], fields["model"]
        _add(daily[(user, at.date(), service, model)], fields)
        _add(monthly[(user, at.date().replace(day=1), service, model)], fields)
        hour = at.replace(minute=0, second=0, microsecond=0)
        _add(hourly[(hour, service, model)], fields)
    return tuple(
        {key: tuple(values) for key, values in table.items()} for table in (daily, monthly, hourly)
    )


async def user_rollup(
    db: asyncpg.Connection, table: str, period: str, user_prefix: str
) -> dict[tuple[Any, ...], Measures]:
    rows = await db.fetch(
        f"SELECT user_id, {period}, service, model, {MEASURES_SQL} FROM {table} "
        "WHERE user_id LIKE $1",
        user_prefix + "%",
    )
    return {tuple(r.values())[:4]: tuple(r.values())[4:] for r in rows}


async def hourly_rollup(
    db: asyncpg.Connection, keys: Iterable[tuple[datetime, str, str]]
) -> dict[tuple[Any, ...], Measures]:
    hours, services, models = zip(*keys, strict=True)
    rows = await db.fetch(
        f"SELECT hour, service, model, {MEASURES_SQL} FROM usage_hourly_by_model "
        "JOIN unnest($1::timestamptz[], $2::text[], $3::text[]) AS k(hour, service, model) "
        "USING (hour, service, model)",
        list(hours),
        list(services),
        list(models),
    )
    return {tuple(r.values())[:3]: tuple(r.values())[3:] for r in rows}


def minus(
    after: dict[tuple[Any, ...], Measures], before: dict[tuple[Any, ...], Measures]
) -> dict[tuple[Any, ...], Measures]:
    """What changed in a shared rollup (other tests' events may share its hours)."""
    zero: Measures = (0, 0, 0, 0, 0, 0, Decimal(0))
    return {
        key: tuple(a - b for a, b in zip(value, before.get(key, zero), strict=True))
        for key, value in after.items()
    }


def months_back(today: date, count: int) -> date:
    index = today.year * 12 + today.month - 1 - count
    return date(index // 12, index % 12 + 1, 1)


async def scribe(env: dict[str, str], *args: str) -> str:
    """Run the `scribe` CLI against the test services; return its output, fail on error."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scribe",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"scribe {' '.join(args)} failed:\n{text}"
    return text
