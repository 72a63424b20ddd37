"""Engine tests: the pipeline on Apache Kafka (`make test-engine` starts a 3-broker cluster).

They take Kafka from SCRIBE_KAFKA_URL and PostgreSQL/Redis from the embedded stack (or from
SCRIBE_DATABASE_URL/SCRIBE_REDIS_URL). SCRIBE_KAFKA_CLUSTER_DIR, set by `scripts/kafka.sh run`,
names the cluster whose brokers the broker-failure test may kill and restart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from scribe.stack.apache_kafka import KafkaCluster
from scribe.workers import WorkerProcess, new_worker
from topics.catalog import USAGE_EVENTS


@pytest.fixture(scope="session", autouse=True)
def apache_kafka_url() -> str:
    url = os.environ.get("SCRIBE_KAFKA_URL")
    if not url:
        pytest.fail(
            "engine tests need Apache Kafka: run `make test-engine`, or point SCRIBE_KAFKA_URL "
            "at a cluster (with SCRIBE_TOPIC_REPLICATION=3 for three brokers)",
            pytrace=False,
        )
    return url


@pytest.fixture(scope="session")
def kafka_cluster() -> KafkaCluster:
    """The cluster `scripts/kafka.sh` started, for tests that kill a broker."""
    root = os.environ.get("SCRIBE_KAFKA_CLUSTER_DIR")
    if not root:
        pytest.skip(
            "killing a broker needs a cluster started by `scripts/kafka.sh` "
            "(SCRIBE_KAFKA_CLUSTER_DIR is not set)"
        )
    return KafkaCluster.recorded(Path(root))


@pytest.fixture
def worker_group(
    services: dict[str, str], state_dir: Path, request: pytest.FixtureRequest
) -> Iterator[WorkerGroup]:
    with ExitStack() as stack:
        group = WorkerGroup(services, state_dir / "groups" / request.node.name, stack)
        yield group


class WorkerGroup:
    """`scribe worker` processes in one consumer group (one app id), stopped when the test
    ends. Group timeouts are short (`SCRIBE_FAST_REBALANCE`: 10 s session) so a killed worker
    is noticed within seconds instead of Faust's default 60 s."""

    def __init__(self, services: dict[str, str], state_dir: Path, stack: ExitStack) -> None:
        self.env = {**services, "SCRIBE_FAST_REBALANCE": "1"}
        self.state_dir = state_dir
        self.stack = stack
        self.app_id = f"scribe-engine-{os.urandom(4).hex()}"
        self.workers: list[WorkerProcess] = []

    def start(self, count: int = 1, **env: str) -> list[WorkerProcess]:
        started = []
        for _ in range(count):
            worker = new_worker({**self.env, **env}, self.state_dir, self.app_id)
            self.stack.callback(worker.stop)
            self.workers.append(worker.start())
            started.append(worker)
        return started

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    def logs(self) -> str:
        return "\n\n".join(f"== {w.log_path}\n{w.log_tail(30)}" for w in self.workers)


def assigned_partitions(worker: WorkerProcess, topic: str = USAGE_EVENTS.name) -> int:
    """The worker's own count of partitions of `topic` it holds (its /metrics gauge)."""
    body = httpx.get(f"{worker.url}/metrics", timeout=5).text
    prefix = f'scribe_assigned_partitions{{topic="{topic}"}} '
    for line in body.splitlines():
        if line.startswith(prefix):
            return int(float(line[len(prefix) :]))
    return 0
