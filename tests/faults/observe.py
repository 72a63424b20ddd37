"""What the fault tests publish and what they read back: raw records in, and the observable
results out (ledger rows and rollups in PostgreSQL, keys in Redis, dead letters, offsets)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import RecordMetadata
from prometheus_client.parser import text_string_to_metric_families

from agents import consumer_group
from devkit.harness import Record, WorkerProcess, read_until
from runtime.service import FLOW_FAILED
from runtime.settings import kafka_bootstrap_servers
from topics.catalog import TopicSpec

Outgoing = tuple[str, bytes, bytes | None]  # topic, key, value


async def publish_raw(kafka_url: str, records: Sequence[Outgoing]) -> list[RecordMetadata]:
    """Send raw bytes as any producer could (2 MiB allowed, to carry the oversized cases)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap_servers(kafka_url),
        max_request_size=2 * 1024 * 1024 + 4096,
        acks="all",
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, key, value in records]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.5)
    return await check()


async def dead_letters(
    kafka_url: str, spec: TopicSpec, keys: set[bytes], timeout: float = 60.0
) -> list[Record]:
    """The dead letters whose key is in `keys`: waits until each key is there, then reads the
    whole topic once more so that any second copy of a dead letter is counted too."""

    def ours(record: Record) -> bool:
        return record.key in keys

    await read_until(
        kafka_url,
        spec.dlq_name,
        done=lambda kept: {r.key for r in kept} >= keys,
        match=ours,
        timeout=timeout,
    )
    return await read_until(kafka_url, spec.dlq_name, done=lambda _: False, match=ours, timeout=3)


async def dead_letters_of_valid(
    kafka_url: str, valid: Sequence[tuple[TopicSpec, set[bytes]]], read_for: float = 3.0
) -> list[Record]:
    """Dead letters of valid events (by record key, per source topic): there must be none.
    Reads each DLQ for `read_for` seconds, since nothing is expected to turn up."""
    found: list[Record] = []
    for spec, keys in valid:
        found += await read_until(
            kafka_url,
            spec.dlq_name,
            done=lambda _: False,
            match=lambda r, keys=keys: r.key in keys,  # type: ignore[misc]
            timeout=read_for,
        )
    return found


async def committed_offset(
    kafka_url: str, app_id: str, topic: str, partition: int, group: str | None = None
) -> int | None:
    """What the workers of `app_id` committed on a partition, in the group that reads `topic`
    (or in `group`, where another flow reads it too)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap_servers(kafka_url),
        group_id=group or consumer_group(app_id, topic),
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        committed: int | None = await consumer.committed(TopicPartition(topic, partition))
        return committed
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class UsageTotals:
    rows: int  # ledger rows: one per event id, never more
    daily_requests: int  # what the daily rollup counted: above `rows` means double counting
    monthly_requests: int
    daily_cost: Decimal
    monthly_cost: Decimal


async def usage_totals(db: asyncpg.Connection, user_ids: Sequence[str]) -> UsageTotals:
    rows = await db.fetchval(
        "SELECT count(*) FROM usage_events WHERE user_id = ANY($1::text[])", list(user_ids)
    )
    daily = await db.fetchrow(
        "SELECT coalesce(sum(requests), 0) AS n, coalesce(sum(cost_usd), 0) AS cost "
        "FROM usage_daily WHERE user_id = ANY($1::text[])",
        list(user_ids),
    )
    monthly = await db.fetchrow(
        "SELECT coalesce(sum(requests), 0) AS n, coalesce(sum(cost_usd), 0) AS cost "
        "FROM usage_monthly WHERE user_id = ANY($1::text[])",
        list(user_ids),
    )
    assert daily is not None and monthly is not None
    return UsageTotals(
        int(rows), int(daily["n"]), int(monthly["n"]), daily["cost"], monthly["cost"]
    )


def log_size(worker: WorkerProcess) -> int:
    return worker.log_path.stat().st_size if worker.log_path.exists() else 0


def flow_failures(worker: WorkerProcess, since: int) -> list[str]:
    """Lines where a flow failed (`runtime.service`: it then stops the worker), in the worker's
    log after byte `since`: a fault a flow should have ridden out ended it instead."""
    with open(worker.log_path, "rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    return [line for line in text.splitlines() if FLOW_FAILED in line]


def metric_total(worker: WorkerProcess, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include `labels`, from /metrics."""
    return worker.metric(name, **labels)


def dead_letter_counts(worker: WorkerProcess, kinds: set[str] | None = None) -> dict[str, float]:
    """scribe_dead_letters_total by source topic, from the worker's /metrics; only the reason
    `kinds` given, if any."""
    text = httpx.get(f"{worker.url}/metrics", timeout=5).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "scribe_dead_letters_total" and (
                kinds is None or sample.labels["kind"] in kinds
            ):
                topic = sample.labels["topic"]
                counts[topic] = counts.get(topic, 0.0) + sample.value
    return counts


@dataclass(frozen=True)
class Outcome:
    """One row of the fault table (printed, and asserted to hold zeros)."""

    fault: str
    valid_sent: int
    reflected: int
    duplicated: int
    invalid_sent: int
    dead_lettered: int
    dead_letter_copies: int
    valid_dead_lettered: int | None = None  # valid events in a DLQ (None: not looked for)

    @property
    def lost(self) -> int:
        return (self.valid_sent - self.reflected) + (self.invalid_sent - self.dead_lettered)

    def line(self) -> str:
        return (
            f"FAULT-TABLE | {self.fault} | valid sent {self.valid_sent}, reflected "
            f"{self.reflected}, duplicated {self.duplicated} | invalid sent {self.invalid_sent}, "
            f"dead-lettered {self.dead_lettered} (extra copies {self.dead_letter_copies})"
            + (
                ""
                if self.valid_dead_lettered is None
                else f", valid dead-lettered {self.valid_dead_lettered}"
            )
            + " | "
            f"lost {self.lost}"
        )
