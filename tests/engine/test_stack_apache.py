"""`scribe stack up --broker apache`: the embedded stack with one Apache Kafka node instead of
Tansu. It answers end offsets correctly and runs transactions, the two things Tansu cannot."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devkit.stack import LocalStack
from runtime.settings import kafka_bootstrap_servers

pytestmark = pytest.mark.engine

# The jars `make test-engine` fetched; a missing cache is fetched with Maven.
JAR_CACHE = Path(__file__).resolve().parents[2] / ".scribe" / "kafka"


async def test_stack_with_apache_kafka_runs_transactions_and_stops_what_it_started(
    tmp_path: Path,
) -> None:
    stack = LocalStack(tmp_path / "stack", broker="apache", kafka_jars=JAR_CACHE)
    with stack.running() as env:
        assert "SCRIBE_FAST_REBALANCE" not in env, "short group timeouts are for Tansu only"
        assert LocalStack.at(tmp_path / "stack").broker == "apache"
        pids = [s.pid for s in stack.status()]
        assert all(s.running for s in stack.status())
        servers = kafka_bootstrap_servers(env["SCRIBE_KAFKA_URL"])

        producer = AIOKafkaProducer(bootstrap_servers=servers, transactional_id="stack-test")
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(250):
                    await producer.send("stack.check", b"%d" % i, partition=0)
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(bootstrap_servers=servers, isolation_level="read_committed")
        await consumer.start()
        try:
            end = await consumer.end_offsets([TopicPartition("stack.check", 0)])
        finally:
            await consumer.stop()
        # 250 records and the transaction's commit marker.
        assert end == {TopicPartition("stack.check", 0): 251}

    assert not any(_running(pid) for pid in pids)


def _running(pid: int) -> bool:
    """Running, not merely a zombie waiting for our process to reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
