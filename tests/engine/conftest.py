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

import pytest

from devkit.stack.apache_kafka import KafkaCluster
from tests.engine.group import WorkerGroup


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
        yield WorkerGroup(services, state_dir / "groups" / request.node.name, stack)
