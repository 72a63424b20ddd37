"""Readers and writers race on the same keys through the whole pipeline, many times over.

Writers bump a row's version in PostgreSQL and publish an invalidation for its cache key
through cache.invalidations; once every app process has applied it (its L1 broadcast
arrived), that version is that process's floor. Readers in three app processes (each its own
cache client: L1, Redis connection, subscription) read through L1 -> Redis -> a loader that
reads the row and sometimes stalls, as a slow query would. A read that starts after a floor
was set must return at least that version.

The same scenario with the lease check removed from the write-back shows the test catches the
stale-set race it guards against.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from cache import CacheClient
from cache.layout import LEASE_FIELD, VALUE_FIELD
from devkit.harness import WorkerProcess
from runtime.settings import kafka_bootstrap_servers
from schemas import encode
from schemas.events import CacheInvalidation
from topics.catalog import CACHE_INVALIDATIONS

pytestmark = pytest.mark.integration

KEYS = 4
PROCESSES = 3
READERS_PER_KEY = 2
RUNS = 8
RUN_SECONDS = 1.5
# Most loads are quick; some stall for longer than an invalidation takes to arrive, which is
# what opens the stale-set race.
LOAD_STALLS = (0.0, 0.0, 0.0, 0.002, 0.01, 0.05, 0.15, 0.3)

UNGUARDED_FILL = f"""
redis.call('HSET', KEYS[1], '{VALUE_FIELD}', ARGV[2])
redis.call('HDEL', KEYS[1], '{LEASE_FIELD}')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class UnguardedClient(CacheClient):
    """The client with the lease check taken out of the write-back: the bug leases prevent."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(redis_url)
        self._fill = self._redis.register_script(UNGUARDED_FILL)


@dataclass
class Tally:
    reads: int = 0
    writes: int = 0
    violations: list[str] = field(default_factory=list)


@dataclass
class Run:
    """One round: its keys, the app processes, and each process's floor per key."""

    table: str
    keys: list[str]
    clients: list[CacheClient]
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    worker: WorkerProcess
    tally: Tally
    rng: random.Random
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    floors: list[dict[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.floors = [dict.fromkeys(self.keys, 0) for _ in self.clients]

    def loader(self, key: str) -> Callable[[], Awaitable[int]]:
        async def load() -> int:
            version = await self.pool.fetchval(
                f"SELECT version FROM {self.table} WHERE key=$1", key
            )
            await asyncio.sleep(self.rng.choice(LOAD_STALLS))
            return int(version)

        return load

    async def read(self, process: int, key: str) -> None:
        while not self.stop.is_set():
            floor = self.floors[process][key]
            seen = await self.clients[process].get(key, self.loader(key), ttl=60)
            self.tally.reads += 1
            if seen < floor:
                self.tally.violations.append(
                    f"process {process} read {key} version {seen} after version {floor}'s "
                    "invalidation was applied there"
                )
            # An L1 hit never suspends; let the writers and the listeners run.
            await asyncio.sleep(0.001)

    async def write(self, key: str) -> None:
        while not self.stop.is_set():
            version = int(
                await self.pool.fetchval(
                    f"UPDATE {self.table} SET version = version + 1 WHERE key=$1 RETURNING version",
                    key,
                )
            )
            event = CacheInvalidation(
                id=f"{key}:v{version}",
                keys=[key],
                reason="race test write",
                occurred_at=datetime.now(UTC),
            )
            await self.producer.send_and_wait(
                CACHE_INVALIDATIONS.name, encode(event), key=CACHE_INVALIDATIONS.key_of(event)
            )
            for process, client in enumerate(self.clients):
                assert await client.applied(event.id, timeout=60), self.worker.log_tail()
                self.floors[process][key] = max(self.floors[process][key], version)
            self.tally.writes += 1

    async def play(self, seconds: float) -> None:
        tasks = [asyncio.create_task(self.write(k)) for k in self.keys]
        tasks += [
            asyncio.create_task(self.read(p, k))
            for p in range(len(self.clients))
            for k in self.keys
            for _ in range(READERS_PER_KEY)
        ]
        await asyncio.sleep(seconds)
        self.stop.set()
        await asyncio.gather(*tasks)


async def race(
    make_client: Callable[[], CacheClient],
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    worker: WorkerProcess,
) -> tuple[Tally, list[CacheClient]]:
    table = f"race_{uuid.uuid4().hex[:10]}"
    await pool.execute(f"CREATE TABLE {table} (key text PRIMARY KEY, version bigint NOT NULL)")
    clients = [make_client() for _ in range(PROCESSES)]
    tally = Tally()
    rng = random.Random(11)
    try:
        for client in clients:
            assert await client.start(), "the L1 broadcast did not subscribe"
        for number in range(RUNS):
            keys = [f"race:{table}:{number}:{k}" for k in range(KEYS)]
            await pool.executemany(
                f"INSERT INTO {table} (key, version) VALUES ($1, 0)", [(k,) for k in keys]
            )
            run = Run(table, keys, clients, pool, producer, worker, tally, rng)
            await run.play(RUN_SECONDS)
        return tally, clients
    finally:
        for client in clients:
            await client.close()
        await pool.execute(f"DROP TABLE {table}")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=20)
    assert pool is not None
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def producer(kafka_url: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers(kafka_url), acks="all")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def test_no_reader_sees_a_version_older_than_an_applied_invalidation(
    services: dict[str, str],
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    worker: WorkerProcess,
) -> None:
    tally, clients = await race(
        lambda: CacheClient(services["SCRIBE_REDIS_URL"]), pool, producer, worker
    )
    refused = sum(c.stats.fills_refused for c in clients)
    print(
        f"\nrace: {RUNS} runs, {tally.writes} writes, {tally.reads} reads, "
        f"{len(tally.violations)} stale reads, {refused} stale write-backs refused"
    )
    assert tally.writes >= RUNS * KEYS * 2
    # Reads far outnumber writes, so most writes race reads of their key. Not by a fixed large
    # factor: a write waits for its invalidation to reach every process, and the faster that
    # is (tens of ms since the window is adaptive) the more writes a run holds.
    assert tally.reads > tally.writes * 3
    assert tally.violations == []
    # The race was really run: slow loaders tried to store values an invalidation had voided.
    assert refused > 0


async def test_the_race_test_catches_a_client_without_the_lease_check(
    services: dict[str, str],
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    worker: WorkerProcess,
) -> None:
    tally, _ = await race(
        lambda: UnguardedClient(services["SCRIBE_REDIS_URL"]), pool, producer, worker
    )
    print(f"\nrace without leases: {tally.writes} writes, {len(tally.violations)} stale reads")
    assert tally.violations, "stale write-backs went unnoticed: the race test is too weak"
