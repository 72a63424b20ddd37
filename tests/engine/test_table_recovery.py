"""Faust table state survives a worker restart on Apache Kafka, checked against what was
written: a restarted worker rebuilds the table from its changelog (the end offsets Tansu gets
wrong) and then goes on from exactly where the last one committed.

The table here is the probe's (`table_probe.py`): main has no pipeline table yet. When the
router's quota table or the world-state table lands, add a case that restarts `scribe worker`
itself and compares that table (or what it writes to PostgreSQL) with the expected state, the
way `expected_totals` does here.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devkit.harness import WorkerProcess, new_worker
from runtime.settings import Settings, kafka_bootstrap_servers
from tests.engine.table_probe import TOPIC_VAR

pytestmark = pytest.mark.engine

PROBE_COMMAND = ("-m", "tests.engine.table_probe", "worker", "--loglevel", "info")
KEYS = 40
BATCH = 3_000

Amounts = list[tuple[str, int]]


def amounts(run_id: str, count: int, seed: int) -> Amounts:
    rng = random.Random(seed)
    return [(f"{run_id}-k{rng.randrange(KEYS)}", rng.randint(1, 1000)) for _ in range(count)]


def expected_totals(*batches: Amounts) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for batch in batches:
        for key, amount in batch:
            totals[key] += amount
    return dict(totals)


async def publish(kafka_url: str, topic: str, batch: Amounts, rate: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers(kafka_url), acks="all")
    await producer.start()
    try:
        started = time.monotonic()
        for first in range(0, len(batch), 100):
            chunk = batch[first : first + 100]
            futures = [
                await producer.send(topic, str(a).encode(), key=k.encode()) for k, a in chunk
            ]
            await asyncio.gather(*futures)
            sent = first + len(chunk)
            await asyncio.sleep(max(0.0, sent / rate - (time.monotonic() - started)))
    finally:
        await producer.stop()


async def create_topic(kafka_url: str, topic: str) -> None:
    """Created and known to the cluster before the probe subscribes: a worker that starts
    first would leave the topic out of its assignment ("Ignoring missing topic")."""
    settings = Settings.from_env()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers(kafka_url))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, settings.topic_partitions, settings.topic_replication)]
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            (described,) = await admin.describe_topics([topic])
            if len(described["partitions"]) == settings.topic_partitions:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{topic} not in the cluster's metadata after 30 s")
    finally:
        await admin.close()


def table_of(worker: WorkerProcess, run_id: str) -> dict[str, int]:
    rows = httpx.get(f"{worker.url}/table", timeout=5).json()
    return {k: v for k, v in rows.items() if k.startswith(f"{run_id}-")}


async def wait_for_table(
    worker: WorkerProcess, run_id: str, expected: dict[str, int], timeout: float = 120
) -> None:
    """Until the table equals `expected`, and still does a moment later (a late redelivery
    would add to it)."""
    deadline = time.monotonic() + timeout
    seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            seen = table_of(worker, run_id)
        except httpx.HTTPError:
            seen = {}
        if seen == expected:
            print(f"table matched after {timeout - (deadline - time.monotonic()):.1f} s")
            await asyncio.sleep(2)
            assert table_of(worker, run_id) == expected, "the table moved past what was written"
            return
        await asyncio.sleep(0.5)
    over = {k: seen.get(k, 0) - v for k, v in expected.items() if seen.get(k, 0) != v}
    raise AssertionError(
        f"table differs from what was written (by key: {over})\n{worker.log_tail()}"
    )


@pytest.mark.parametrize(
    ("guarantee", "crash"),
    [("at_least_once", False), ("exactly_once", True)],
    ids=["at_least_once-sigterm", "exactly_once-sigkill"],
)
async def test_table_state_is_recovered_after_a_worker_restart(
    guarantee: str, crash: bool, services: dict[str, str], state_dir: Path, kafka_url: str
) -> None:
    """Stopped (SIGTERM) or crashed (SIGKILL) once the batch is processed and committed, the
    worker's successor holds exactly what was written. Not tested, because it does not hold: a
    SIGKILL *mid-stream* leaves a Faust Table off by a few events even under exactly_once
    (faust-streaming 0.15.3; see robinhood/faust#340), and double-counts under at_least_once."""
    run_id = uuid.uuid4().hex[:8]
    topic = f"engine.table-probe.{run_id}"
    env = {
        **services,
        "SCRIBE_FAST_REBALANCE": "1",
        "SCRIBE_PROCESSING_GUARANTEE": guarantee,
        TOPIC_VAR: topic,
    }
    app_id = f"engine-probe-{run_id}"
    first, second = amounts(run_id, BATCH, seed=1), amounts(run_id, BATCH, seed=2)
    workers: list[WorkerProcess] = []

    def start_probe() -> WorkerProcess:
        probe = new_worker(env, state_dir / "probes", app_id)
        probe.command = PROBE_COMMAND
        workers.append(probe)
        return probe.start()

    await create_topic(kafka_url, topic)
    try:
        probe = start_probe()
        await publish(kafka_url, topic, first, rate=5000)
        await wait_for_table(probe, run_id, expected_totals(first))
        await asyncio.sleep(1.5)  # past the commit interval (1 s): the batch is committed
        if crash:
            probe.kill()
        else:
            probe.stop()

        restarted = start_probe()
        await wait_for_table(restarted, run_id, expected_totals(first))
        await publish(kafka_url, topic, second, rate=5000)
        await wait_for_table(restarted, run_id, expected_totals(first, second))
    finally:
        for worker in workers:
            worker.stop()
