"""Usage aggregation: the limit (bare aiokafka), the peers (Faust Table, Quix Streams) and ours
(`scribe worker` into PostgreSQL), all on the same topic and the same events.

The events look like live traffic (1,000 users, the catalog's models plus one the producer
prices, timestamps within the last hour). They are published once; every run reads them from
offset 0 with a fresh consumer group, and the worker writes them into an emptied ledger, so
each run does the same work.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import TracebackType

import asyncpg
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.usage.flow import USAGE
from agents.usage.synthetic import SyntheticUsage, synthetic_usage
from bench.cases import DEDUPE_SIZE, EVENTS_PER_S, PEAK_RSS, Case, Context
from devkit.harness import new_worker
from runtime.settings import Settings, kafka_bootstrap_servers
from scribe.app import prepare
from sinks.postgres.usage import Connection
from topics.catalog import USAGE_EVENTS

CASES_DIR = Path(__file__).parent
LEDGER_TABLES = (
    "usage_event_ids",
    "usage_events",
    "usage_daily",
    "usage_monthly",
    "usage_hourly_by_model",
    "budget_alerts",
    "budget_state",
)
PEER_TIMEOUT_S = 900.0


class PeakRss:
    """The largest resident set of a process (and its children) while the block runs."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.process = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss + sum(
                    child.memory_info().rss for child in self.process.children(recursive=True)
                )
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self._stop.wait(self.every)

    @property
    def megabytes(self) -> float:
        return self.peak / 2**20

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()


def events(ctx: Context) -> list[SyntheticUsage]:
    """The run's usage events, generated once, published once to usage.events."""
    if "usage" not in ctx.shared:
        generated = list(
            synthetic_usage(
                f"bench-{uuid.uuid4().hex[:6]}", ctx.events, users=1000, within=timedelta(hours=1)
            )
        )
        settings = Settings(
            kafka_url=ctx.env["SCRIBE_KAFKA_URL"],
            database_url=ctx.env["SCRIBE_DATABASE_URL"],
            redis_url=ctx.env["SCRIBE_REDIS_URL"],
        ).require()
        asyncio.run(prepare(settings, report=ctx.say))
        ctx.say(f"publishing {ctx.events:,} usage events to {USAGE_EVENTS.name} ...")
        asyncio.run(_publish(ctx.env["SCRIBE_KAFKA_URL"], USAGE_EVENTS.name, generated))
        ctx.shared["usage"] = generated
    made: list[SyntheticUsage] = ctx.shared["usage"]
    return made


async def _publish(kafka_url: str, topic: str, items: list[SyntheticUsage]) -> float:
    """Publish with acks=all; the rate from the first send to the last acknowledgement."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap_servers(kafka_url), acks="all", linger_ms=5
    )
    await producer.start()
    try:
        started = time.monotonic()
        futures = [await producer.send(topic, item.value, key=item.key) for item in items]
        await asyncio.gather(*futures)
        return len(items) / (time.monotonic() - started)
    finally:
        await producer.stop()


class AiokafkaProduce(Case):
    """The same messages through a bare aiokafka producer (acks=all, linger 5 ms) into a fresh
    topic with the partitions of usage.events."""

    name = "limit.aiokafka_produce"

    def measure(self, ctx: Context) -> dict[str, float]:
        items = events(ctx)
        topic = f"bench-produce-{uuid.uuid4().hex[:8]}"
        asyncio.run(_create_topic(ctx.env["SCRIBE_KAFKA_URL"], topic))
        return {"events_per_s": asyncio.run(_publish(ctx.env["SCRIBE_KAFKA_URL"], topic, items))}


async def _create_topic(kafka_url: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers(kafka_url))
    await admin.start()
    try:
        described = await admin.describe_topics([USAGE_EVENTS.name])
        partitions = len(described[0]["partitions"])
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


class AiokafkaConsume(Case):
    """One plain consumer reading usage.events from offset 0 in batches of the worker's size:
    no decode, no database; from its first fetch to its last."""

    name = "limit.aiokafka_consume"

    def measure(self, ctx: Context) -> dict[str, float]:
        events(ctx)
        return {"events_per_s": asyncio.run(_consume_rate(ctx.env["SCRIBE_KAFKA_URL"], ctx.events))}


async def _consume_rate(kafka_url: str, count: int) -> float:
    consumer = AIOKafkaConsumer(
        USAGE_EVENTS.name,
        bootstrap_servers=kafka_bootstrap_servers(kafka_url),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen, started = 0, time.monotonic()
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=USAGE.max_batch)
            seen += sum(len(messages) for messages in batches.values())
        return seen / (time.monotonic() - started)
    finally:
        await consumer.stop()


class UsageToPostgres(Case):
    """`scribe worker` (the usage batch consumer: decode, price, ledger + rollups + budgets in
    one transaction per batch, offsets committed after), one worker, into an emptied ledger.
    The rate is from the ledger's own clock (when each batch's ledger statement ran)."""

    name = "ours.usage_to_postgres"
    metrics = (EVENTS_PER_S, PEAK_RSS, DEDUPE_SIZE)

    def measure(self, ctx: Context) -> dict[str, float]:
        events(ctx)
        database = ctx.env["SCRIBE_DATABASE_URL"]
        asyncio.run(_emptied(database))
        worker = new_worker(ctx.env, ctx.state_dir / "workers")
        try:
            worker.start()
            assert worker.process is not None
            with PeakRss(worker.process.pid) as rss:
                rate = asyncio.run(
                    _ledger_rate(
                        database, ctx.events, PEER_TIMEOUT_S, worker.alive, worker.log_path
                    )
                )
            return {
                "events_per_s": rate,
                "peak_rss_mb": rss.megabytes,
                "dedupe_guard_mb": asyncio.run(_guard_megabytes(database)),
            }
        finally:
            worker.stop()


async def _guard_megabytes(database_url: str) -> float:
    """The dedupe guard's size on disk (table and index) once the run's events are in."""
    conn = await asyncpg.connect(database_url)
    try:
        size = await conn.fetchval("SELECT pg_total_relation_size('usage_event_ids')")
        return float(size) / 2**20
    finally:
        await conn.close()


async def empty_ledger(conn: Connection) -> None:
    """Every row of the ledger, its guard, rollups and budget outbox gone."""
    await conn.execute(f"TRUNCATE {', '.join(LEDGER_TABLES)}")


async def _emptied(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await empty_ledger(conn)
    finally:
        await conn.close()


async def _ledger_rate(
    database_url: str, count: int, timeout: float, alive: Callable[[], bool], log: Path
) -> float:
    """Events after the first batch over the span from the first to the last batch's ledger
    statement (`ingested_at`)."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval("SELECT count(*) FROM usage_event_ids") < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker did not store {count} events in {timeout} s")
            if not alive():
                raise RuntimeError(f"the worker exited before storing {count} events; see {log}")
            await asyncio.sleep(0.2)
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


class PeerProcess(Case):
    """A peer run as a child process: `python SCRIPT APP_ID EXPECTED RESULT_FILE`; it writes
    `<events> <seconds from its first to its last event>` once it has seen them all."""

    script: str
    metrics = (EVENTS_PER_S, PEAK_RSS)

    def measure(self, ctx: Context) -> dict[str, float]:
        events(ctx)
        tag = uuid.uuid4().hex[:8]
        result = ctx.state_dir / f"{self.name}-{tag}.result"
        log = ctx.state_dir / f"{self.name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    str(CASES_DIR / self.script),
                    f"bench-{tag}",
                    str(ctx.events),
                    str(result),
                ],
                env={**os.environ, **ctx.env, "SCRIBE_STATE_DIR": str(ctx.state_dir / tag)},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            with PeakRss(process.pid) as rss:
                deadline = time.monotonic() + PEER_TIMEOUT_S
                while not result.exists() or not result.read_text().endswith("\n"):
                    if process.poll() is not None:
                        raise RuntimeError(f"{self.script} exited; see {log}")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{self.script} did not finish; see {log}")
                    time.sleep(0.2)
            seen, seconds = result.read_text().split()
            return {"events_per_s": (int(seen) - 1) / float(seconds), "peak_rss_mb": rss.megabytes}
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


class FaustTable(PeerProcess):
    """An idiomatic per-event Faust agent keeping the same daily sums in a Table."""

    name = "peer.faust_table"
    script = "faust_table_sums.py"


class QuixStreams(PeerProcess):
    """The same sums in a Quix Streams stateful StreamingDataFrame (librdkafka)."""

    name = "peer.quixstreams"
    script = "quix_sums.py"

    def unavailable(self, ctx: Context) -> str | None:
        try:
            import quixstreams  # noqa: F401
        except ImportError:
            return "quixstreams is not installed (pip install -e '.[bench]')"
        return None


def usage_cases() -> list[Case]:
    return [AiokafkaProduce(), AiokafkaConsume(), UsageToPostgres(), FaustTable(), QuixStreams()]
