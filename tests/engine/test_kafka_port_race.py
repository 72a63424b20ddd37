"""A port found free can be taken before a Kafka node binds it (CI machines run much else): a
fresh cluster is then started again on other ports instead of failing the run."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.stack.apache_kafka import cluster as cluster_module
from devkit.stack.apache_kafka.cluster import KafkaCluster
from devkit.stack.apache_kafka.distribution import fetch
from devkit.stack.processes import free_ports

pytestmark = pytest.mark.engine


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port another process holds for the whole test."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_a_port_taken_before_the_node_binds_it_costs_one_more_start(
    tmp_path: Path, held_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed_out: list[int] = []

    def first_one_taken(count: int, host: str = "127.0.0.1") -> list[int]:
        # The first port the cluster asks for is the one the holder took after it was found
        # free: the race, made certain.
        ports = free_ports(count, host)
        if not handed_out:
            ports[0] = held_port
        handed_out.extend(ports)
        return ports

    monkeypatch.setattr(cluster_module, "free_ports", first_one_taken)
    said: list[str] = []
    cluster = KafkaCluster(tmp_path / "kafka", fetch(Path(".scribe/kafka"), report=said.append))
    try:
        url = cluster.up_fresh(1, report=said.append)
        assert str(held_port) not in url
        assert any("a port was taken before kafka bound it (attempt 1 of 3)" in s for s in said)
        assert all(n.record.alive() for n in cluster.nodes())
    finally:
        cluster.down(purge=True)
