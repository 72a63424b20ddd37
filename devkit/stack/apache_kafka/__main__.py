"""`python -m devkit.stack.apache_kafka fetch | up | down | status | run -- COMMAND`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from devkit.stack.apache_kafka.cluster import DEFAULT_HEAP, KafkaCluster
from devkit.stack.apache_kafka.distribution import fetch
from devkit.stack.apache_kafka.sasl_ssl import MECHANISM
from devkit.stack.processes import StackError

DEFAULT_DIR = Path(".scribe/kafka-cluster")
DEFAULT_CACHE = Path(".scribe/kafka")

dir_option = click.option(
    "--dir",
    "root",
    type=click.Path(path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="Where the cluster keeps its data, logs and record of processes.",
)
cache_option = click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=DEFAULT_CACHE,
    show_default=True,
    help="Where the jars fetched from Maven Central are kept.",
)
brokers_option = click.option("--brokers", type=click.IntRange(1, 9), default=3, show_default=True)
heap_option = click.option(
    "--heap", default=DEFAULT_HEAP, show_default=True, help="JVM heap per node."
)
sasl_ssl_option = click.option(
    "--sasl-ssl/--no-sasl-ssl",
    default=True,
    show_default=True,
    help="A new cluster also gets a SASL_SSL (SCRAM-SHA-512) listener per node, with a "
    "certificate made for it; brokers keep talking PLAINTEXT to each other.",
)


def _say(line: str) -> None:
    click.echo(line, err=True)


def _cluster(root: Path, cache: Path, heap: str = DEFAULT_HEAP) -> KafkaCluster:
    try:
        return KafkaCluster(root, fetch(cache, report=_say), heap=heap)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None


def _environment(cluster: KafkaCluster) -> dict[str, str]:
    """The pipeline's URL (PLAINTEXT) and, with a SASL_SSL listener, what the tests that use it
    read: its URL, the CA's PEM and the SCRAM-SHA-512 user."""
    env = {"SCRIBE_KAFKA_URL": cluster.url, "SCRIBE_KAFKA_CLUSTER_DIR": str(cluster.root)}
    listener = cluster.sasl_ssl()
    if listener is not None:
        env |= {
            "SCRIBE_TEST_KAFKA_SASL_SSL_URL": cluster.sasl_ssl_url,
            "SCRIBE_TEST_KAFKA_SASL_SSL_CAFILE": listener.cafile,
            "SCRIBE_TEST_KAFKA_SASL_SSL_MECHANISM": MECHANISM,
            "SCRIBE_TEST_KAFKA_SASL_SSL_USERNAME": listener.username,
            "SCRIBE_TEST_KAFKA_SASL_SSL_PASSWORD": listener.password,
        }
    return env


@click.group()
def main() -> None:
    """Apache Kafka in KRaft mode on loopback, from the jars on Maven Central."""


@main.command("fetch")
@cache_option
def fetch_command(cache: Path) -> None:
    """Fetch the broker's jars (once); print where they are."""
    cluster = _cluster(DEFAULT_DIR, cache)
    click.echo(cluster.jars.libs)


@main.command()
@dir_option
@cache_option
@brokers_option
@heap_option
@sasl_ssl_option
@click.option("--fresh", is_flag=True, help="Delete an earlier cluster's data first.")
def up(*, root: Path, cache: Path, brokers: int, heap: str, sasl_ssl: bool, fresh: bool) -> None:
    """Start the cluster; print the `export` lines that point the pipeline at it."""
    cluster = _cluster(root, cache, heap)
    try:
        if fresh:
            cluster.up_fresh(brokers, report=_say, sasl_ssl=sasl_ssl)
        else:
            cluster.up(brokers, report=_say, sasl_ssl=sasl_ssl)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    for name, value in _environment(cluster).items():
        click.echo(f"export {name}={value}")


@main.command()
@dir_option
@click.option("--purge", is_flag=True, help="Also delete the cluster's data.")
def down(root: Path, purge: bool) -> None:
    """Stop exactly the nodes `up` started."""
    _cluster(root, DEFAULT_CACHE).down(report=_say, purge=purge)


@main.command()
@dir_option
def status(root: Path) -> None:
    """Each node, its port and whether it runs; exit 1 unless all run."""
    nodes = _cluster(root, DEFAULT_CACHE).nodes()
    if not nodes:
        click.echo(f"no cluster recorded in {root}")
        sys.exit(1)
    for node in nodes:
        state = "running" if node.record.alive() else "stopped"
        click.echo(f"node {node.node_id}  {state:<8} pid {node.pid:<8} {node.bootstrap}")
    sys.exit(0 if all(n.record.alive() for n in nodes) else 1)


def _interrupt(child: subprocess.Popen[bytes]) -> None:
    """SIGINT first, as Ctrl-C would: pytest then still tears its fixtures down (its workers and
    embedded stack); SIGTERM, then SIGKILL, only if it does not end."""
    for stop, grace in ((child.send_signal, 90.0), (lambda _: child.terminate(), 15.0)):
        if child.poll() is not None:
            return
        stop(signal.SIGINT)
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            continue
    if child.poll() is None:
        child.kill()
        child.wait()


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@dir_option
@cache_option
@brokers_option
@heap_option
@sasl_ssl_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    *,
    root: Path,
    cache: Path,
    brokers: int,
    heap: str,
    sasl_ssl: bool,
    command: tuple[str, ...],
) -> None:
    """Start a fresh cluster, run COMMAND with SCRIBE_KAFKA_URL and SCRIBE_KAFKA_CLUSTER_DIR
    pointing at it (and SCRIBE_TEST_KAFKA_SASL_SSL_* at its SASL_SSL listener), then stop and
    delete the cluster, also when COMMAND fails; exit with COMMAND's code."""
    cluster = _cluster(root, cache, heap)
    # A CI runner or `kill` stops us with SIGTERM: exit through `finally`, stopping the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        cluster.up_fresh(brokers, report=_say, sasl_ssl=sasl_ssl)
        child = subprocess.Popen(list(command), env={**os.environ, **_environment(cluster)})
        try:
            code = child.wait()
        finally:
            _interrupt(child)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        cluster.down(report=_say, purge=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
