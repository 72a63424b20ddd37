"""One of three brokers is SIGKILLed mid-stream: producers (acks=all, min.insync.replicas=2)
and the workers carry on with the two left, and nothing is lost or counted twice."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from devkit.stack.apache_kafka import KafkaCluster
from tests.engine.group import WorkerGroup, stream_with_a_failure, wait_for_spread

pytestmark = pytest.mark.engine


async def test_processing_continues_and_nothing_is_lost_when_a_broker_is_killed(
    worker_group: WorkerGroup,
    kafka_cluster: KafkaCluster,
    db: asyncpg.Connection,
    kafka_url: str,
) -> None:
    nodes = kafka_cluster.nodes()
    assert len(nodes) == 3, "the broker-failure test needs the 3-broker cluster"
    assert all(n.record.alive() for n in nodes)
    victim = nodes[-1].node_id
    worker_group.start(2)
    await wait_for_spread(worker_group, kafka_url)
    try:
        await stream_with_a_failure(
            worker_group, db, kafka_url, lambda: kafka_cluster.kill(victim), name="broker"
        )
        assert not kafka_cluster.nodes()[-1].record.alive(), "the broker came back by itself?"
        assert len(worker_group.alive()) == 2, worker_group.logs()
    finally:
        await asyncio.to_thread(kafka_cluster.restart, victim, print)
