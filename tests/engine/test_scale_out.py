"""Scale-out on Apache Kafka: `scribe worker` processes in one consumer group share the
partitions; one is SIGKILLed mid-stream, the others take its partitions over, and once the
stream is drained the ledger's totals equal the exact sums of what was published."""

from __future__ import annotations

import asyncpg
import pytest

from tests.engine.group import WorkerGroup, stream_with_a_failure, wait_for_spread

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("workers", [2, 3])
async def test_workers_share_partitions_and_survivors_take_over_a_killed_one(
    workers: int, worker_group: WorkerGroup, db: asyncpg.Connection, kafka_url: str
) -> None:
    started = worker_group.start(workers)
    print(f"partitions per worker: {await wait_for_spread(worker_group, kafka_url)}")
    victim = started[0]
    processed_before_kill: list[float] = []

    def kill_a_worker() -> None:
        processed_before_kill.append(victim.metric("scribe_usage_events_total", outcome="counted"))
        victim.kill()

    await stream_with_a_failure(worker_group, db, kafka_url, kill_a_worker, name="scale")

    assert processed_before_kill[0] > 0, "the killed worker had processed nothing"
    survivors = worker_group.alive()
    assert len(survivors) == workers - 1, worker_group.logs()
    print(f"partitions per survivor: {await wait_for_spread(worker_group, kafka_url)}")
