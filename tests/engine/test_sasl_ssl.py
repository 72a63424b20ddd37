"""The four flows through a SASL_SSL + SCRAM-SHA-512 listener of Apache Kafka: a `scribe worker`
that reaches Kafka only there (brokers verified with the test CA, SCRAM user and password)
stores usage exactly, answers AI requests, ticks worlds that replay to the same state, and
applies cache invalidations, without exiting; a client without the credentials is refused.

`scripts/kafka.sh run` (so `make test-engine`) gives the cluster that listener and exports
SCRIBE_TEST_KAFKA_SASL_SSL_*. The test's own clients publish and read on the PLAINTEXT listener
of the same cluster. The worker writes to a PostgreSQL, Redis and provider simulator of its
own, so what lands there cannot have come from another test's worker on the PLAINTEXT listener.
"""

from __future__ import annotations

import os
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from agents.usage.flow import USAGE
from agents.usage.synthetic import synthetic_usage
from devkit.harness import WorkerProcess, group_offsets, new_worker
from devkit.stack import LocalStack
from runtime.settings import kafka_bootstrap_servers
from schemas.events import CacheInvalidation, ResponseStatus
from schemas.examples import example
from tests.conftest import WORKER_TEST_SETTINGS
from tests.integration.router.conftest import Router, Simulator, wait_for_lanes
from tests.integration.test_usage_exactness import Expected
from tests.integration.test_world import assert_replay_matches, eventually, village, world_row
from tests.integration.usage_pipeline import months_back, publish, wait_committed_past
from topics.catalog import USAGE_EVENTS
from topics.publisher import Publisher

pytestmark = pytest.mark.engine

# What `scripts/kafka.sh` exports -> what the worker reads.
LISTENER_VARS = {
    "SCRIBE_TEST_KAFKA_SASL_SSL_URL": "SCRIBE_KAFKA_URL",
    "SCRIBE_TEST_KAFKA_SASL_SSL_CAFILE": "SCRIBE_KAFKA_SSL_CAFILE",
    "SCRIBE_TEST_KAFKA_SASL_SSL_MECHANISM": "SCRIBE_KAFKA_SASL_MECHANISM",
    "SCRIBE_TEST_KAFKA_SASL_SSL_USERNAME": "SCRIBE_KAFKA_SASL_USERNAME",
    "SCRIBE_TEST_KAFKA_SASL_SSL_PASSWORD": "SCRIBE_KAFKA_SASL_PASSWORD",
}
USAGE_BATCH = 2_000


@pytest.fixture(scope="module")
def sasl_ssl() -> dict[str, str]:
    """The worker's Kafka settings for the SASL_SSL listener."""
    missing = [name for name in LISTENER_VARS if not os.environ.get(name)]
    if missing:
        pytest.skip(
            "needs the SASL_SSL listener `scripts/kafka.sh run` (and `make test-engine`) "
            f"starts; not set: {', '.join(missing)}"
        )
    return {
        "SCRIBE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        **{worker: os.environ[exported] for exported, worker in LISTENER_VARS.items()},
    }


@pytest.fixture(scope="module")
def own_stack(sasl_ssl: dict[str, str], state_dir: Path) -> Iterator[dict[str, str]]:
    """PostgreSQL, Redis and the simulators of this module's worker alone."""
    with LocalStack(state_dir / "sasl-ssl-stack", broker=None).running() as env:
        yield env


@pytest.fixture(scope="module")
def secured_env(sasl_ssl: dict[str, str], own_stack: dict[str, str]) -> dict[str, str]:
    return {**own_stack, **WORKER_TEST_SETTINGS, **sasl_ssl}


@pytest.fixture(scope="module")
def secured_worker(secured_env: dict[str, str], state_dir: Path) -> Iterator[WorkerProcess]:
    """A worker whose every Kafka client must log in: the router's lanes and intake included,
    which is where it used to fail (and exit) after answering /ready."""
    worker = new_worker(secured_env, state_dir / "sasl-ssl-workers")
    try:
        try:
            worker.start()
            wait_for_lanes(worker)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}\n{connection_failures(worker)}", pytrace=False)
        yield worker
    finally:
        worker.stop()


def connection_failures(worker: WorkerProcess) -> str:
    """The worker's first lines that say a Kafka client could not connect, and whether it
    still runs: why it did not get ready, when the log's tail shows only the aftermath."""
    lines = worker.log_path.read_text(errors="replace").splitlines()
    failed = [line for line in lines if "Unable to bootstrap" in line][:5]
    state = "still running" if worker.alive() else "exited"
    return f"the worker has {state}; connection failures logged:\n" + "\n".join(failed)


@pytest.fixture(autouse=True)
def stays_up(secured_worker: WorkerProcess) -> Iterator[None]:
    """Each check ends with the worker still running and ready."""
    yield
    assert secured_worker.alive(), f"the worker exited:\n{secured_worker.log_tail()}"
    ready = httpx.get(f"{secured_worker.url}/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    assert "Unable to bootstrap" not in secured_worker.log_path.read_text(errors="replace")


@pytest.fixture
async def own_db(own_stack: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(own_stack["SCRIBE_DATABASE_URL"])
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def publisher(apache_kafka_url: str) -> AsyncIterator[Publisher]:
    """The test's own producer, on the cluster's PLAINTEXT listener."""
    async with Publisher(kafka_bootstrap_servers(apache_kafka_url)) as plain:
        yield plain


async def test_a_usage_batch_lands_exact_in_postgresql(
    apache_kafka_url: str, secured_worker: WorkerProcess, own_db: asyncpg.Connection
) -> None:
    run = f"sasl{uuid.uuid4().hex[:8]}"
    # Last month's hours: the usage this worker's router records meanwhile (it answers the AI
    # requests other tests left on the shared cluster) lands in the current hour's rollups.
    month = months_back(datetime.now(UTC).date(), 1)
    items = list(synthetic_usage(run, USAGE_BATCH, months=[month], seed=11))
    expected = Expected(run, items)
    group = USAGE.group_of(secured_worker.app_id)
    # A new group reads the topic from the start: other tests' usage shares the hourly rollups.
    backlog = await usage_backlog(apache_kafka_url, group)
    if backlog:
        await wait_committed_past(
            apache_kafka_url, group, backlog, timeout=180, log=secured_worker.log_tail
        )
    await expected.snapshot_shared(own_db)
    last = await publish(apache_kafka_url, items)
    await wait_committed_past(
        apache_kafka_url, group, last, timeout=120, log=secured_worker.log_tail
    )
    await expected.check(own_db, "through SASL_SSL")


async def usage_backlog(kafka_url: str, group: str) -> dict[int, int]:
    """The last offset of each usage.events partition that holds any record."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers(kafka_url))
    await admin.start()
    try:
        (topic,) = await admin.describe_topics([USAGE_EVENTS.name])
    finally:
        await admin.close()
    partitions = [TopicPartition(USAGE_EVENTS.name, p["partition"]) for p in topic["partitions"]]
    async with group_offsets(kafka_url, group) as consumer:
        ends = await consumer.end_offsets(partitions)
    return {tp.partition: end - 1 for tp, end in ends.items() if end > 0}


async def test_an_ai_request_is_answered_on_ai_responses(
    apache_kafka_url: str,
    own_stack: dict[str, str],
    secured_worker: WorkerProcess,
    publisher: Publisher,
) -> None:
    simulator = Simulator(own_stack["SCRIBE_PROVIDER_URL"])
    router = Router(apache_kafka_url, publisher, secured_worker)
    tag = router.tag()
    request = router.request(tag)
    await router.publish(request)
    responses = await router.responses({request.request_id}, timeout=90)
    assert responses, f"no response on ai.responses:\n{secured_worker.log_tail()}"
    # Only this module's worker calls this simulator: the answer came through SASL_SSL.
    assert simulator.calls(tag), f"its provider was never called:\n{secured_worker.log_tail()}"
    ok = [r for r in responses if r.status is ResponseStatus.OK]
    assert ok and ok[0].cost_usd is not None and ok[0].cost_usd >= Decimal(0), responses


async def test_a_world_is_ticked_and_replays_to_a_match(
    secured_env: dict[str, str],
    secured_worker: WorkerProcess,
    publisher: Publisher,
    own_db: asyncpg.Connection,
) -> None:
    world = f"w-sasl-{uuid.uuid4().hex[:8]}"
    await publisher.publish(village(world))
    await eventually(
        lambda: world_row(own_db, world),
        lambda row: row is not None and row["head_version"] > 1,
        "the world ticked",
        timeout=60,
    )
    assert_replay_matches(secured_env, world)


async def test_a_cache_invalidation_is_applied_in_redis(
    own_stack: dict[str, str], secured_worker: WorkerProcess, publisher: Publisher
) -> None:
    world = f"w-sasl-{uuid.uuid4().hex[:8]}"
    doomed = [f"world:{world}", f"world:{world}:npc:1"]
    kept = f"world:{world}:unrelated"
    redis = aioredis.from_url(own_stack["SCRIBE_REDIS_URL"])
    try:
        for key in (*doomed, kept):
            await redis.set(key, b"cached")
        await publisher.publish(example(CacheInvalidation, keys=doomed))
        await eventually(
            lambda: redis.exists(*doomed), lambda count: count == 0, "keys removed", timeout=60
        )
        assert await redis.get(kept) == b"cached"
    finally:
        await redis.aclose()


async def _login(password: str | None) -> None:
    """An admin client that asks for the cluster's metadata on the SASL_SSL listener: with
    the SCRAM user and `password`, or (None) as a client without credentials."""
    env = os.environ
    servers = kafka_bootstrap_servers(env["SCRIBE_TEST_KAFKA_SASL_SSL_URL"])
    security = (
        {"security_protocol": "PLAINTEXT"}
        if password is None
        else {
            "security_protocol": "SASL_SSL",
            "ssl_context": ssl.create_default_context(
                cafile=env["SCRIBE_TEST_KAFKA_SASL_SSL_CAFILE"]
            ),
            "sasl_mechanism": env["SCRIBE_TEST_KAFKA_SASL_SSL_MECHANISM"],
            "sasl_plain_username": env["SCRIBE_TEST_KAFKA_SASL_SSL_USERNAME"],
            "sasl_plain_password": password,
        }
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=10_000, **security)
    try:
        await admin.start()
        await admin.describe_cluster()
    finally:
        await admin.close()


@pytest.mark.parametrize("password", [None, "not-the-password"], ids=["no credentials", "wrong"])
async def test_a_client_without_the_credentials_is_refused(
    sasl_ssl: dict[str, str], password: str | None
) -> None:
    await _login(sasl_ssl["SCRIBE_KAFKA_SASL_PASSWORD"])  # the right ones are let in
    with pytest.raises(KafkaConnectionError):
        await _login(password)
