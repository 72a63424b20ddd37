"""The Apache Kafka cluster's configuration and records, without starting a JVM."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from devkit.stack.apache_kafka.cluster import (
    KafkaCluster,
    KafkaNode,
    new_cluster_id,
    node_properties,
    render_properties,
    replication_for,
)
from devkit.stack.apache_kafka.distribution import POM, KafkaJars, java_major, kafka_version
from devkit.stack.apache_kafka.sasl_ssl import SaslSslListener
from devkit.stack.processes import StackError

NODES = [KafkaNode(1, 9101, 9201), KafkaNode(2, 9102, 9202), KafkaNode(3, 9103, 9203)]


def test_the_pom_names_a_kafka_4_release() -> None:
    assert kafka_version(POM.read_text()).startswith("4.")


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
    ],
)
def test_java_major_version(output: str, major: int) -> None:
    assert java_major(output) == major


def test_java_version_that_cannot_be_read_is_an_error() -> None:
    with pytest.raises(StackError, match="cannot read the Java version"):
        java_major("command not found")


def test_three_nodes_keep_three_copies_with_two_in_sync() -> None:
    assert replication_for(3) == (3, 2)
    assert replication_for(1) == (1, 1)


def test_each_node_of_a_three_node_cluster_votes_and_listens_on_loopback() -> None:
    props = node_properties(NODES[1], NODES, Path("/data/node-2"))
    assert props["node.id"] == "2"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9201,2@127.0.0.1:9202,3@127.0.0.1:9203"
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9102,CONTROLLER://127.0.0.1:9202"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9102"
    assert props["log.dirs"] == "/data/node-2"
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ):
        assert props[key] == "3", key
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_a_single_node_needs_no_second_copy() -> None:
    props = node_properties(NODES[0], NODES[:1], Path("/data"))
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9201"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"


def test_properties_render_one_per_line() -> None:
    assert render_properties({"a.b": "1", "c": "x,y"}) == "a.b=1\nc=x,y\n"


def test_cluster_ids_have_kafkas_form() -> None:
    first, second = new_cluster_id(), new_cluster_id()
    assert first != second
    assert len(first) == 22 and "=" not in first
    assert len(base64.urlsafe_b64decode(first + "==")) == 16
    # 2,000 draws meet a leading "-" (1 in 64 per draw) with certainty but for ~1e-14.
    assert not any(new_cluster_id().startswith("-") for _ in range(2000))


def test_a_cluster_is_found_again_from_its_record(tmp_path: Path) -> None:
    jars = KafkaJars(tmp_path / "libs", "4.1.1", "/usr/bin/java")
    cluster = KafkaCluster(tmp_path / "cluster", jars, heap="256m")
    cluster._save("some-id", NODES)

    found = KafkaCluster.recorded(tmp_path / "cluster")
    assert found.jars == jars
    assert found.heap == "256m"
    assert found.nodes() == NODES
    assert found.url == "kafka://127.0.0.1:9101,127.0.0.1:9102,127.0.0.1:9103"


def test_no_record_no_cluster(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no Apache Kafka cluster is recorded"):
        KafkaCluster.recorded(tmp_path)


LISTENER = SaslSslListener(
    username="scribe",
    password="pw-123",
    cafile="/tls/ca.pem",
    keystore="/tls/broker.p12",
    truststore="/tls/truststore.p12",
    store_password="store-456",
)


def test_a_sasl_ssl_listener_is_added_beside_plaintext_and_brokers_keep_plaintext() -> None:
    node = KafkaNode(2, 9102, 9202, sasl_ssl_port=9302)
    props = node_properties(node, [node], Path("/data"), LISTENER)
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:9102,CONTROLLER://127.0.0.1:9202,SASL_SSL://127.0.0.1:9302"
    )
    assert props["advertised.listeners"] == ("PLAINTEXT://127.0.0.1:9102,SASL_SSL://127.0.0.1:9302")
    assert props["listener.security.protocol.map"] == (
        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL"
    )
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert (
        "ScramLoginModule required"
        in (props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"])
    )
    assert props["listener.name.sasl_ssl.ssl.keystore.location"] == "/tls/broker.p12"
    assert props["listener.name.sasl_ssl.ssl.keystore.password"] == "store-456"


def test_without_a_listener_no_sasl_setting_is_written() -> None:
    props = node_properties(NODES[0], NODES, Path("/data"))
    assert not any("sasl" in key for key in props)


def test_the_scram_user_is_stored_when_the_storage_is_formatted() -> None:
    assert LISTENER.scram_format_arguments() == [
        "--add-scram",
        "SCRAM-SHA-512=[name=scribe,password=pw-123]",
    ]


def test_the_listener_is_found_again_from_its_record(tmp_path: Path) -> None:
    assert SaslSslListener.recorded(tmp_path) is None
    LISTENER.save(tmp_path)
    assert SaslSslListener.recorded(tmp_path) == LISTENER
