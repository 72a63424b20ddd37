"""A 1- or 3-node Apache Kafka cluster in KRaft mode on loopback, for tests, benchmarks and
`scribe stack up --broker apache`.

Each node is one JVM with both roles (broker and controller) and a small heap. `<root>/cluster.json`
records every node's ports and process (pid *and* start time), so `down` and `kill` signal exactly
the processes `up` started and never one that merely reuses a pid.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from devkit.stack.apache_kafka import sasl_ssl as sasl_ssl_listener
from devkit.stack.apache_kafka.distribution import KafkaJars
from devkit.stack.apache_kafka.sasl_ssl import LISTENER, SaslSslListener
from devkit.stack.processes import (
    ProcessRecord,
    StackError,
    free_port,
    free_ports,
    port_is_free,
    spawn,
    terminate,
)

LOOPBACK = "127.0.0.1"
STATE_FILE = "cluster.json"
STARTED_LINE = "Kafka Server started"
DEFAULT_HEAP = "384m"
FORMAT_TIMEOUT_S = 120

# Broker and controller logs at WARN, except the line that says a node is up.
LOG4J2_PROPERTIES = """\
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.raftserver.name = kafka.server.KafkaRaftServer
logger.raftserver.level = INFO
"""


# What a node's log says when another process holds a port it was given.
PORT_TAKEN = "Address already in use"
START_ATTEMPTS = 3


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    broker_port: int
    controller_port: int
    sasl_ssl_port: int = 0  # 0: the node has no SASL_SSL listener
    pid: int = 0
    started_at: float = 0.0

    @property
    def record(self) -> ProcessRecord:
        return ProcessRecord(self.pid, self.started_at)

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.broker_port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.sasl_ssl_port}"


def replication_for(nodes: int) -> tuple[int, int]:
    """(replication factor, min in-sync replicas) for a cluster of `nodes`: three copies and
    two in sync once there are three nodes, so one broker can fail without stopping writes."""
    replication = min(3, nodes)
    return replication, 2 if replication >= 3 else 1


def node_properties(
    node: KafkaNode,
    voters: Sequence[KafkaNode],
    data_dir: Path,
    sasl_ssl: SaslSslListener | None = None,
) -> dict[str, str]:
    """The `server.properties` of one combined broker+controller node. With `sasl_ssl`, the
    node also listens for SASL_SSL clients on its `sasl_ssl_port`; brokers and controllers
    still talk to each other in PLAINTEXT."""
    replication, min_insync = replication_for(len(voters))
    listeners = [
        f"PLAINTEXT://{LOOPBACK}:{node.broker_port}",
        f"CONTROLLER://{LOOPBACK}:{node.controller_port}",
    ]
    advertised = [f"PLAINTEXT://{LOOPBACK}:{node.broker_port}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    if sasl_ssl is not None:
        listeners.append(f"{LISTENER}://{LOOPBACK}:{node.sasl_ssl_port}")
        advertised.append(f"{LISTENER}://{LOOPBACK}:{node.sasl_ssl_port}")
        protocols.append(f"{LISTENER}:{LISTENER}")
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": ",".join(
            f"{v.node_id}@{LOOPBACK}:{v.controller_port}" for v in voters
        ),
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": ",".join(protocols),
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": str(replication),
        "min.insync.replicas": str(min_insync),
        "offsets.topic.replication.factor": str(replication),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": str(min_insync),
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": str(replication),
        "share.coordinator.state.topic.min.isr": str(min_insync),
        # Consumers join at once instead of waiting 3 s for more members (tests start many groups).
        "group.initial.rebalance.delay.ms": "0",
        # A small machine: fewer threads than the defaults (3 network, 8 I/O).
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        **(sasl_ssl.broker_properties() if sasl_ssl is not None else {}),
    }


def render_properties(properties: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def new_cluster_id() -> str:
    """A cluster id in Kafka's form: 16 random bytes, URL-safe base64 without padding. Like
    Kafka's own `Uuid.randomUuid`, never one starting with "-": `kafka-storage format
    --cluster-id -x...` reads it as an option (1 id in 64; it failed a `make test-engine` run)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def bootstrap_url(nodes: Sequence[KafkaNode]) -> str:
    return "kafka://" + ",".join(n.bootstrap for n in nodes)


def _registered_brokers(bootstrap: list[str]) -> int:
    """How many brokers the cluster's metadata lists; 0 when it cannot be asked yet."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def ask() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            return len(cluster["brokers"])
        except Exception:  # not up yet is an answer here: the caller polls
            return 0
        finally:
            await admin.close()

    # Its own thread and loop, so callers inside a running event loop can wait too.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, ask()).result()


class KafkaCluster:
    def __init__(self, root: Path, jars: KafkaJars, heap: str = DEFAULT_HEAP) -> None:
        self.root = root.resolve()
        self.jars = jars
        self.heap = heap

    @property
    def _state_path(self) -> Path:
        return self.root / STATE_FILE

    def nodes(self) -> list[KafkaNode]:
        if not self._state_path.exists():
            return []
        raw = json.loads(self._state_path.read_text())
        return [KafkaNode(**node) for node in raw["nodes"]]

    def cluster_id(self) -> str | None:
        if not self._state_path.exists():
            return None
        return str(json.loads(self._state_path.read_text())["cluster_id"])

    def _save(self, cluster_id: str, nodes: Sequence[KafkaNode]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._state_path.with_suffix(".tmp")
        state = {
            "cluster_id": cluster_id,
            "jars": {**asdict(self.jars), "libs": str(self.jars.libs)},
            "heap": self.heap,
            "nodes": [asdict(n) for n in nodes],
        }
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self._state_path)

    @classmethod
    def recorded(cls, root: Path) -> KafkaCluster:
        """The cluster `up` recorded under `root`, with the jars and heap it was started with:
        what a test needs to kill and restart one of its nodes."""
        path = root / STATE_FILE
        if not path.exists():
            raise StackError(f"no Apache Kafka cluster is recorded in {root}")
        state = json.loads(path.read_text())
        jars = state["jars"]
        return cls(
            root, KafkaJars(Path(jars["libs"]), jars["version"], jars["java"]), state["heap"]
        )

    def node_dir(self, node_id: int) -> Path:
        return self.root / f"node-{node_id}"

    def log_path(self, node_id: int) -> Path:
        return self.root / f"node-{node_id}.log"

    @property
    def url(self) -> str:
        return bootstrap_url(self.nodes())

    def sasl_ssl(self) -> SaslSslListener | None:
        """The SASL_SSL listener made when the cluster was created, if it was asked for."""
        return SaslSslListener.recorded(self.root)

    @property
    def sasl_ssl_url(self) -> str:
        return "kafka://" + ",".join(n.sasl_ssl_bootstrap for n in self.nodes())

    def up(
        self,
        brokers: int,
        ports: Sequence[int] | None = None,
        report: Callable[[str], None] = lambda _: None,
        timeout: float = 120.0,
        sasl_ssl: bool = False,
    ) -> str:
        """Start the cluster (or the nodes of it that are not running); return its URL.

        A cluster recorded here keeps its id, data and ports, unless `ports` (broker ports, one
        per node) names others for the nodes it starts. `sasl_ssl`: a new cluster also gets a
        SASL_SSL (SCRAM-SHA-512) listener on a port of its own per node (`sasl_ssl()`).
        """
        nodes = self.nodes()
        cluster_id = self.cluster_id()
        if nodes and len(nodes) != brokers:
            raise StackError(
                f"{self.root} holds a {len(nodes)}-node cluster, not {brokers}; "
                "stop it with --purge first"
            )
        if not nodes or cluster_id is None:
            cluster_id = new_cluster_id()
            spare = iter(free_ports(3 * brokers))
            broker_ports = list(ports) if ports else [next(spare) for _ in range(brokers)]
            if len(broker_ports) != brokers:
                raise StackError(f"{brokers} broker(s) need {brokers} port(s), got {broker_ports}")
            nodes = [
                KafkaNode(i + 1, port, next(spare), next(spare) if sasl_ssl else 0)
                for i, port in enumerate(broker_ports)
            ]
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / sasl_ssl_listener.RECORD_FILE).unlink(missing_ok=True)
            if sasl_ssl:
                made = time.monotonic()
                sasl_ssl_listener.create(self.root / "tls").save(self.root)
                report(f"SASL_SSL certificates made in {time.monotonic() - made:.1f} s")
        else:
            nodes = [self._with_free_ports(n) for n in nodes]
            if ports:
                nodes = [
                    n if n.record.alive() else replace(n, broker_port=port)
                    for n, port in zip(nodes, ports, strict=True)
                ]
        self._save(cluster_id, nodes)
        started = time.monotonic()
        for node in nodes:
            if not node.record.alive():
                self._format(node, nodes, cluster_id)
        for node in nodes:
            if node.record.alive():
                report(f"kafka node {node.node_id}: already running (pid {node.pid})")
                continue
            self._launch(node.node_id, report)
        self._wait_ready(timeout, report)
        report(
            f"Apache Kafka {self.jars.version}: {brokers} node(s) ready at {self.url} "
            f"in {time.monotonic() - started:.1f} s"
        )
        return self.url

    def up_fresh(
        self, brokers: int, report: Callable[[str], None] = lambda _: None, sasl_ssl: bool = False
    ) -> str:
        """A new cluster (an earlier one here is deleted) on ports found free. A port found free
        can be taken by another process before a node binds it; then the cluster is deleted and
        started again on other ports, up to START_ATTEMPTS times."""
        for attempt in range(1, START_ATTEMPTS + 1):
            self.down(report=report, purge=True)
            try:
                return self.up(brokers, report=report, sasl_ssl=sasl_ssl)
            except StackError as exc:
                if PORT_TAKEN not in str(exc) or attempt == START_ATTEMPTS:
                    raise
                report(
                    f"a port was taken before kafka bound it (attempt {attempt} of "
                    f"{START_ATTEMPTS}); starting again on other ports"
                )
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _with_free_ports(self, node: KafkaNode) -> KafkaNode:
        """A stopped node keeps its ports unless another process took one meanwhile."""
        if node.record.alive():
            return node
        broker = node.broker_port if port_is_free(node.broker_port) else free_port()
        controller = node.controller_port if port_is_free(node.controller_port) else free_port()
        secured = node.sasl_ssl_port
        if secured and not port_is_free(secured):
            secured = free_port()
        return replace(node, broker_port=broker, controller_port=controller, sasl_ssl_port=secured)

    def _format(self, node: KafkaNode, voters: Sequence[KafkaNode], cluster_id: str) -> None:
        """Write the node's config; format its storage once (`kafka-storage format`)."""
        directory = self.node_dir(node.node_id)
        data = directory / "data"
        directory.mkdir(parents=True, exist_ok=True)
        listener = self.sasl_ssl()
        (directory / "server.properties").write_text(
            render_properties(node_properties(node, voters, data, listener))
        )
        (self.root / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        if (data / "meta.properties").exists():
            return
        cmd = [
            self.jars.java,
            "-Xmx256m",
            "-cp",
            self.jars.classpath,
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(directory / "server.properties"),
            *(listener.scram_format_arguments() if listener is not None else []),
        ]
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            raise StackError(
                f"formatting kafka node {node.node_id} failed ({result.returncode}): "
                f"{(result.stdout + result.stderr).strip()}"
            )

    def _launch(self, node_id: int, report: Callable[[str], None]) -> None:
        nodes = self.nodes()
        node = next(n for n in nodes if n.node_id == node_id)
        log_path = self.log_path(node_id)
        log_path.write_bytes(b"")  # readiness is read from this run's log only
        cmd = [
            self.jars.java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            # G1's young pauses here are 6-10 ms; SerialGC's were 25-60 ms (issue 19).
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            # C1 only: these brokers live minutes. C2 was still compiling 40 s after start, at
            # 0.13-0.47 of a core, half the broker's CPU at 5,000 messages/s, taken from its
            # clients on a 2-core machine; with C1 only the compiler idles after ~10 s and the
            # node starts 1-3 s sooner. A long-lived broker would want C2's faster code.
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
            "-cp",
            self.jars.classpath,
            "kafka.Kafka",
            str(self.node_dir(node_id) / "server.properties"),
        ]
        record = spawn(cmd, log_path)
        started = replace(node, pid=record.pid, started_at=record.started_at)
        cluster_id = self.cluster_id()
        assert cluster_id is not None  # `up` saved it before launching
        self._save(cluster_id, [started if n.node_id == node_id else n for n in nodes])
        report(f"kafka node {node_id}: started (pid {record.pid}) on {LOOPBACK}:{node.broker_port}")

    def _wait_ready(self, timeout: float, report: Callable[[str], None]) -> None:
        """Every node logged that it started, and the metadata lists every broker."""
        deadline = time.monotonic() + timeout
        nodes = self.nodes()
        next_progress = time.monotonic() + 10
        while time.monotonic() < deadline:
            for node in nodes:
                if not node.record.alive():
                    raise StackError(
                        f"kafka node {node.node_id} exited during start-up; "
                        f"last lines of {self.log_path(node.node_id)}:\n"
                        f"{self.log_tail(node.node_id)}"
                    )
            started = [
                n
                for n in nodes
                if STARTED_LINE in self.log_path(n.node_id).read_text("utf-8", "replace")
            ]
            if len(started) == len(nodes) and (
                _registered_brokers([n.bootstrap for n in nodes]) == len(nodes)
            ):
                return
            if time.monotonic() >= next_progress:
                next_progress += 10
                report(f"  waiting for kafka: {len(started)}/{len(nodes)} node(s) started")
            time.sleep(0.25)
        tails = "\n".join(f"node {n.node_id}:\n{self.log_tail(n.node_id)}" for n in nodes)
        raise StackError(f"Apache Kafka was not ready within {timeout:.0f} s\n{tails}")

    def log_tail(self, node_id: int, lines: int = 20) -> str:
        path = self.log_path(node_id)
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: a crash, no controlled shutdown."""
        node = next(n for n in self.nodes() if n.node_id == node_id)
        if node.record.alive():
            os.kill(node.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while node.record.alive() and time.monotonic() < deadline:
                time.sleep(0.05)

    def restart(
        self, node_id: int, report: Callable[[str], None] = lambda _: None, timeout: float = 120.0
    ) -> None:
        """Start a stopped or killed node again on its ports and data; wait for the cluster."""
        node = next(n for n in self.nodes() if n.node_id == node_id)
        if not node.record.alive():
            self._launch(node_id, report)
        self._wait_ready(timeout, report)

    def down(self, report: Callable[[str], None] = lambda _: None, purge: bool = False) -> None:
        """Stop every recorded node (all at once: a lone last node would wait for a quorum that
        has gone); with `purge`, also delete the data and the record."""
        nodes = self.nodes()
        running = [n for n in nodes if n.record.alive()]
        for node in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, signal.SIGTERM)
        for node in running:
            terminate(node.record, timeout=30)
            report(f"kafka node {node.node_id}: stopped (pid {node.pid})")
        if purge and self.root.exists():
            shutil.rmtree(self.root)
            report(f"removed {self.root}")
