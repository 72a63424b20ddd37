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
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from scribe.settings import kafka_bootstrap_servers
from scribe.workers import WorkerProcess, new_worker
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


async def publish(
    kafka_url: str, topic: str, batch: Amounts, rate: float, on_progress: Callable[[int], None]
) -> None:
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
            on_progress(sent)
            await asyncio.sleep(max(0.0, sent / rate - (time.monotonic() - started)))
    finally:
        await producer.stop()


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
    ("guarantee", "how"),
    [("at_least_once", "stop"), ("exactly_once", "kill")],
    ids=["at_least_once-sigterm", "exactly_once-sigkill-mid-stream"],
)
async def test_table_state_is_recovered_after_a_worker_restart(
    guarantee: str, how: str, services: dict[str, str], state_dir: Path, kafka_url: str
) -> None:
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

    try:
        probe = start_probe()
        if how == "kill":
            # Killed a third of the way into the batch: its last changes are uncommitted.
            def kill_mid_stream(sent: int) -> None:
                if sent >= BATCH // 3 and probe.alive():
                    probe.kill()

            await publish(kafka_url, topic, first, rate=1000, on_progress=kill_mid_stream)
            assert not probe.alive()
        else:
            await publish(kafka_url, topic, first, rate=5000, on_progress=lambda _: None)
            await wait_for_table(probe, run_id, expected_totals(first))
            probe.stop()

        restarted = start_probe()
        await wait_for_table(restarted, run_id, expected_totals(first))
        await publish(kafka_url, topic, second, rate=5000, on_progress=lambda _: None)
        await wait_for_table(restarted, run_id, expected_totals(first, second))
    finally:
        for worker in workers:
            worker.stop()
