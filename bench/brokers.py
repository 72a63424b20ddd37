"""The servers a flow's bench script starts for itself: the embedded stack (Tansu), or its
PostgreSQL, Redis and simulators beside a one-broker Apache Kafka of the script's own (the jars
from Maven Central, as `scripts/kafka.sh` fetches them, cached in `.scribe/kafka`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from devkit.stack import BROKERS, LocalStack
from devkit.stack.apache_kafka.cluster import KafkaCluster
from devkit.stack.apache_kafka.distribution import fetch
from devkit.stack.processes import sigterm_as_interrupt

__all__ = ["BROKERS", "KAFKA_JARS", "stack_on"]

KAFKA_JARS = Path(__file__).resolve().parent.parent / ".scribe" / "kafka"


@contextmanager
def stack_on(
    broker: str, root: Path, report: Callable[[str], None] = lambda _: None
) -> Iterator[dict[str, str]]:
    """The embedded stack under `root` with `broker`, as SCRIBE_* variables; an Apache Kafka
    started here is a fresh one, stopped and deleted afterwards (also on SIGTERM)."""
    if broker == "tansu":
        with LocalStack(root / "stack").running(report=report) as env:
            yield env
        return
    if broker != "apache":
        raise ValueError(f"unknown broker {broker!r}; choose one of {', '.join(BROKERS)}")
    cluster = KafkaCluster(root / "kafka", fetch(KAFKA_JARS, report=report))
    with sigterm_as_interrupt():
        try:
            kafka_url = cluster.up_fresh(1, report=report)
            with LocalStack(root / "stack", broker=None).running(report=report) as env:
                yield {**env, "SCRIBE_KAFKA_URL": kafka_url, "SCRIBE_TOPIC_REPLICATION": "1"}
        finally:
            cluster.down(report=report, purge=True)
