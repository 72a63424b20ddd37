"""Behind PgBouncer in transaction mode: a worker whose every PostgreSQL connection (migrations
included) goes through the pooler counts usage events sent twice exactly once, and applies world
events sent twice once, with `scribe world replay` (also through the pooler) matching.

The pooler hands its few server connections out round-robin, so consecutive transactions of a
client land on different server connections: anything that relied on session state (named
prepared statements, session advisory locks, temporary tables kept across transactions) fails
here. The first test shows the fixture catches exactly that: a statement asyncpg cached on one
server connection is missing on the next, and SCRIBE_DATABASE_STATEMENT_CACHE_SIZE=0 works."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest

from agents.usage.flow import USAGE
from agents.usage.synthetic import synthetic_usage
from devkit.harness import WorkerProcess, new_worker, read_until
from devkit.stack import LocalStack
from devkit.stack.pgbouncer import PgBouncer, fetch
from devkit.stack.processes import free_port
from runtime.settings import kafka_bootstrap_servers
from schemas import encode
from sinks.postgres.migrate import load_migrations, migrate
from tests.conftest import WORKER_TEST_SETTINGS
from tests.integration.test_usage_exactness import Expected
from tests.integration.test_world import (
    applied_ids,
    assert_replay_matches,
    eventually,
    village,
    world_event,
)
from tests.integration.usage_pipeline import months_back, publish, wait_committed_past
from topics.publisher import Publisher

pytestmark = pytest.mark.integration

TOOLS = Path(__file__).resolve().parents[2] / ".scribe" / "tools"
EVENTS = 3_000
BEHIND_PGBOUNCER = {"SCRIBE_DATABASE_STATEMENT_CACHE_SIZE": "0"}
POOL_SIZE = 3
QUERY = "SELECT $1::int + $2::int"


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A stack of its own: the worker's new consumer groups read only this file's events, not
    the backlog the session's earlier tests left on the shared broker."""
    with LocalStack(tmp_path_factory.mktemp("pgbouncer-stack")).running() as env:
        yield env


@pytest.fixture(scope="module")
def pooled_url(
    own_stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """PgBouncer in transaction mode in front of the stack's PostgreSQL; stopped at the end,
    also when a test failed."""
    binary = fetch(TOOLS / "pgbouncer", report=print)
    server_port = urlsplit(own_stack["SCRIBE_DATABASE_URL"]).port
    assert server_port is not None
    pooler = PgBouncer(
        tmp_path_factory.mktemp("pgbouncer"), binary, server_port, pool_size=POOL_SIZE
    )
    port = free_port()
    record = pooler.start(port)
    try:
        pooler.wait_ready(record, port, timeout=20)
        yield pooler.url(port)
    finally:
        pooler.stop(record, port)


@pytest.fixture(scope="module")
def pooled_env(own_stack: dict[str, str], pooled_url: str) -> dict[str, str]:
    return own_stack | {"SCRIBE_DATABASE_URL": pooled_url} | BEHIND_PGBOUNCER


@pytest.fixture(scope="module")
def pooled_worker(
    pooled_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    worker = new_worker(pooled_env | WORKER_TEST_SETTINGS, tmp_path_factory.mktemp("workers"))
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
async def direct_db(own_stack: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    """The checks read PostgreSQL itself, not through the pooler under test."""
    conn = await asyncpg.connect(own_stack["SCRIBE_DATABASE_URL"])
    try:
        yield conn
    finally:
        await conn.close()


async def _queries_through(url: str, statement_cache_size: int) -> None:
    """Concurrent clients, as a worker's flows are, each running one query again and again: a
    cached statement is prepared on the server connection of its first use only."""
    pool = await asyncpg.create_pool(
        url, min_size=4, max_size=4, statement_cache_size=statement_cache_size
    )

    async def client(n: int) -> None:
        for m in range(10):
            async with pool.acquire() as conn:
                assert await conn.fetchval(QUERY, n, m) == n + m

    try:
        await asyncio.gather(*(client(n) for n in range(4)))
    finally:
        await pool.close()


async def _reuse_on_another_server_connection(url: str, statement_cache_size: int) -> int:
    """One client runs a query, then runs it again while another client's open transaction holds
    the server connection the first run used, so the pooler must hand it another one: a
    statement cached on the first server connection is missing there. Returns the sum of the
    second run. Deterministic: it does not rely on the pooler's round robin or on how many server
    connections it happened to have opened yet (on a busy machine it may have only one)."""
    client = await asyncpg.connect(url, statement_cache_size=statement_cache_size)
    holders: list[asyncpg.Connection] = []
    try:
        async with client.transaction():
            assert await client.fetchval(QUERY, 1, 2) == 3
            used = await client.fetchval("SELECT pg_backend_pid()")
        # Open transactions until one holds `used`; the pool has POOL_SIZE server connections.
        for _ in range(POOL_SIZE):
            holder = await asyncpg.connect(url, statement_cache_size=0)
            holders.append(holder)
            await holder.execute("BEGIN")
            if await holder.fetchval("SELECT pg_backend_pid()") == used:
                break
        else:
            pytest.fail(f"no client got server connection {used} in {POOL_SIZE} tries")
        # The others give theirs back, so the pooler has a free one for the client.
        for other in holders[:-1]:
            await other.execute("ROLLBACK")
        second: int = await client.fetchval(QUERY, 3, 4)
        return second
    finally:
        for conn in [client, *holders]:
            await conn.close()


async def test_the_pooler_breaks_asyncpgs_statement_cache_and_the_setting_avoids_it(
    pooled_url: str,
) -> None:
    with pytest.raises(asyncpg.PostgresError, match="prepared statement") as raised:
        await _reuse_on_another_server_connection(pooled_url, statement_cache_size=100)
    print(f"  with asyncpg's statement cache: {raised.value!r}", flush=True)
    assert await _reuse_on_another_server_connection(pooled_url, statement_cache_size=0) == 7
    await _queries_through(pooled_url, statement_cache_size=0)


async def test_migrations_from_four_runners_at_once_apply_once_through_the_pooler(
    pooled_url: str, own_stack: dict[str, str]
) -> None:
    """A session advisory lock taken through the pooler stays on whichever server connection
    took it, and the unlock may run on another: the next runner waits forever."""
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(own_stack["SCRIBE_DATABASE_URL"])
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        scratch = pooled_url.rsplit("/", 1)[0] + f"/{name}"
        options = {"statement_cache_size": 0}
        runners = [migrate(scratch, connect_options=options) for _ in range(4)]
        applied = await asyncio.wait_for(asyncio.gather(*runners), 30)
        assert sum(len(a) for a in applied) == len(load_migrations())
        assert await asyncio.wait_for(migrate(scratch, connect_options=options), 30) == []
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


async def test_usage_sent_twice_is_counted_exactly_once_behind_the_pooler(
    pooled_worker: WorkerProcess, own_stack: dict[str, str], direct_db: asyncpg.Connection
) -> None:
    run = f"pb{uuid.uuid4().hex[:8]}"
    today = datetime.now(UTC).date()
    # A past month too: its ledger partition is created on demand, through the pooler.
    items = list(synthetic_usage(run, EVENTS, months=[months_back(today, 2), today], seed=11))
    expected = Expected(run, items)
    await expected.snapshot_shared(direct_db)
    group = USAGE.group_of(pooled_worker.app_id)
    kafka_url = own_stack["SCRIBE_KAFKA_URL"]
    for stage in ("after the first publication", "after the same events again"):
        last = await publish(kafka_url, items)
        await wait_committed_past(kafka_url, group, last, timeout=90, log=pooled_worker.log_tail)
        await expected.check(direct_db, stage)


async def test_world_events_sent_twice_apply_once_and_replay_behind_the_pooler(
    pooled_worker: WorkerProcess,
    own_stack: dict[str, str],
    pooled_env: dict[str, str],
    direct_db: asyncpg.Connection,
) -> None:
    w = f"w-pb-{uuid.uuid4().hex[:8]}"
    events = [
        village(w),
        world_event(w, "npc_moved", npc_id="npc-1", location_id="tavern"),
        world_event(w, "relationship_changed", npc_id="npc-1", other_npc_id="npc-2", delta=5),
        *(world_event(w, "memory_recorded", npc_id="npc-2", content=f"day {n}") for n in range(8)),
    ]
    kafka_url = own_stack["SCRIBE_KAFKA_URL"]
    # An unknown type, sent after the duplicates on the same partition: once it is dead-lettered,
    # every duplicate before it was consumed.
    marker = f"ev-{uuid.uuid4().hex[:12]}"
    unknown = orjson.dumps(
        {**orjson.loads(encode(world_event(w, "world_unloaded"))), "event_id": marker}
        | {"type": "dragon_summoned"}
    )
    async with Publisher(kafka_bootstrap_servers(kafka_url)) as publisher:
        await publisher.publish_many(events)
        await eventually(lambda: applied_ids(direct_db, [w]), lambda n: n == len(events), "applied")
        await publisher.publish_many(events)
        await publisher.publish_raw([("world.events", w.encode(), unknown)])
    dead = await read_until(
        kafka_url,
        "world.events.dlq",
        done=lambda kept: len(kept) >= 1,
        match=lambda r: r.value is not None and marker.encode() in r.value,
    )
    assert dead, pooled_worker.log_tail()
    assert await applied_ids(direct_db, [w]) == len(events)
    assert await direct_db.fetchval("SELECT count(*) FROM memories WHERE world_id = $1", w) == 8
    assert_replay_matches(pooled_env, w)
