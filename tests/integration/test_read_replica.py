"""SCRIBE_DATABASE_READ_URL against a real streaming replica: a fresh primary of this module's
own (the session's database is left alone), `pg_basebackup -R` of it, and the copy started as a
hot standby on another loopback port, both from the PostgreSQL binaries `pgserver` ships.

Which server answered is told by content: replay is paused on the replica, the primary gets a
change the replica has not applied, and the report shows one value or the other."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from devkit.harness import WorkerProcess, new_worker
from devkit.stack.processes import ProcessRecord, free_port
from devkit.stack.services import LOOPBACK, Postgres
from sinks.postgres.databases import READ_APPLICATION_NAME, Databases
from sinks.postgres.migrate import migrate
from tests.integration.usage_pipeline import scribe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FALLBACKS = "scribe_db_read_fallbacks_total"


@dataclass
class Server:
    postgres: Postgres
    port: int
    record: ProcessRecord | None = None

    @property
    def url(self) -> str:
        return self.postgres.url(self.port)

    def start(self) -> None:
        self.record = self.postgres.start(self.port)

    def stop(self) -> None:
        if self.record is not None:
            self.postgres.stop(self.record, self.port)


@dataclass
class Pair:
    primary: Server
    replica: Server


def _base_backup(primary: Server, replica: Postgres) -> None:
    """`pg_basebackup -R` of `primary` into `replica`'s empty data directory, as the user the
    server runs as; -R writes standby.signal and primary_conninfo, so it starts as a standby."""
    user = replica._run_as()  # as root: makes the directory and hands it to that user
    replica.data_dir.mkdir(parents=True, exist_ok=True)
    replica.data_dir.chmod(0o700)
    replica._pg(
        [
            replica._bin("pg_basebackup"),
            *("-h", LOOPBACK, "-p", str(primary.port), "-U", "postgres"),
            *("-D", str(replica.data_dir), "-R", "-X", "stream", "-c", "fast"),
        ],
        user,
    )


async def _streaming(replica_url: str, timeout: float = 30.0) -> None:
    """Wait until the standby receives the primary's WAL as it is written."""
    conn = await asyncpg.connect(replica_url, timeout=5)
    try:
        deadline = time.monotonic() + timeout
        query = "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'"
        while await conn.fetchval(query) == 0:
            assert time.monotonic() < deadline, "the replica never started streaming"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    root = Path(tempfile.mkdtemp(prefix="scribe-replica-"))
    primary = Server(Postgres(root / "primary"), free_port())
    replica = Server(Postgres(root / "replica"), free_port())
    try:
        # initdb's pg_hba trusts replication from loopback; wal_level=replica and
        # max_wal_senders=10 are PostgreSQL's defaults.
        primary.start()
        asyncio.run(migrate(primary.url))
        _base_backup(primary, replica.postgres)
        replica.start()
        asyncio.run(_streaming(replica.url))
        yield Pair(primary, replica)
    finally:
        replica.stop()
        primary.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url, timeout=5)


async def _set_budget(url: str, user: str, usd: str) -> None:
    conn = await _connect(url)
    try:
        await conn.execute(
            "INSERT INTO budgets (user_id, monthly_usd) VALUES ($1, $2) "
            "ON CONFLICT (user_id) DO UPDATE SET monthly_usd = EXCLUDED.monthly_usd",
            user,
            Decimal(usd),
        )
    finally:
        await conn.close()


async def _replicated(pair: Pair, user: str, usd: str, timeout: float = 15.0) -> None:
    """Wait until the replica shows the budget the primary has."""
    conn = await _connect(pair.replica.url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            value = await conn.fetchval("SELECT monthly_usd FROM budgets WHERE user_id = $1", user)
            if value == Decimal(usd):
                return
            assert time.monotonic() < deadline, f"replica shows {value}, primary {usd}"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def _pause_replay(replica: asyncpg.Connection, timeout: float = 15.0) -> None:
    """Stop the replica applying WAL (it still receives it) at a point where replay holds no
    lock: paused inside a DDL transaction of the primary (the worker creates partitions), its
    AccessExclusiveLock would block every read of that table until replay resumes."""
    deadline = time.monotonic() + timeout
    while True:
        await replica.execute("SELECT pg_wal_replay_pause()")
        for _ in range(500):  # a pause takes effect between two WAL records
            if await replica.fetchval("SELECT pg_get_wal_replay_pause_state()") == "paused":
                break
            await asyncio.sleep(0.02)
        held = await replica.fetchval(
            "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted"
        )
        if held == 0:
            return
        assert time.monotonic() < deadline, f"replay holds {held} exclusive lock(s)"
        await replica.execute("SELECT pg_wal_replay_resume()")
        await asyncio.sleep(0.1)


def _fallbacks(reason: str) -> float:
    return REGISTRY.get_sample_value(FALLBACKS, {"reason": reason}) or 0.0


async def test_reads_go_to_the_replica_and_back_to_the_primary_when_it_lags(pair: Pair) -> None:
    async with Databases(
        pair.primary.url, pair.replica.url, max_lag_s=1.0, check_s=0.2, max_size=2
    ) as databases:
        reads = await databases.for_reads()
        assert await reads.fetchval("SELECT pg_is_in_recovery()") is True  # the standby
        assert databases.verdict.lag_s == 0.0  # idle and streaming: current, not "old"
        assert await (await databases.primary()).fetchval("SELECT pg_is_in_recovery()") is False

        conn = await _connect(pair.replica.url)
        try:
            await _pause_replay(conn)
            user = f"lag-{uuid.uuid4().hex[:8]}"
            await _set_budget(pair.primary.url, user, "7")  # received, not applied
            lagging = _fallbacks("lagging")
            deadline = time.monotonic() + 10
            while await (await databases.for_reads()).fetchval("SELECT pg_is_in_recovery()"):
                assert time.monotonic() < deadline, f"never fell back: {databases.verdict.lag_s}"
                await asyncio.sleep(0.1)
            assert databases.verdict.reason == "lagging"
            assert databases.verdict.lag_s is not None and databases.verdict.lag_s > 1.0
            assert _fallbacks("lagging") == lagging + 1
        finally:
            await conn.execute("SELECT pg_wal_replay_resume()")
            await conn.close()
        await _replicated(pair, user, "7")
        await asyncio.sleep(0.25)  # the next measurement is due
        reads = await databases.for_reads()
        assert await reads.fetchval("SELECT pg_is_in_recovery()") is True
        assert databases.verdict.reason is None


async def test_costs_report_is_served_by_the_replica_until_it_lags_too_far(pair: Pair) -> None:
    user = f"cli-{uuid.uuid4().hex[:8]}"
    await _set_budget(pair.primary.url, user, "10")
    await _replicated(pair, user, "10")
    env = {
        "SCRIBE_DATABASE_URL": pair.primary.url,
        "SCRIBE_DATABASE_READ_URL": pair.replica.url,
        # Only PostgreSQL is used by the report; the other two must merely be named.
        "SCRIBE_KAFKA_URL": "kafka://127.0.0.1:1",
        "SCRIBE_REDIS_URL": "redis://127.0.0.1:1/0",
        "SCRIBE_STATE_DIR": str(Path(tempfile.gettempdir()) / "scribe-replica-cli"),
    }

    async def budget(max_lag_s: str, fallback: bool = False) -> Decimal:
        out = await scribe(
            env | {"SCRIBE_DATABASE_READ_MAX_LAG_S": max_lag_s},
            *("costs", "report", "--user", user, "--json"),
        )
        # The command says on stderr (merged here) when the primary answered instead.
        log, _, document = ("\n" + out).partition("\n{")
        assert ("reads go to the primary: read replica lagging" in log) == fallback, out
        return Decimal(json.loads("{" + document)["budget_usd"])

    conn = await _connect(pair.replica.url)
    try:
        await _pause_replay(conn)
        await _set_budget(pair.primary.url, user, "20")
        # Within the lag allowed: the replica answers, with what it has applied.
        assert await budget("3600") == 10
        # Further behind than allowed: the primary answers.
        await asyncio.sleep(1.2)
        assert await budget("1", fallback=True) == 20
    finally:
        await conn.execute("SELECT pg_wal_replay_resume()")
        await conn.close()
    await _replicated(pair, user, "20")
    assert await budget("3600") == 20


async def test_the_worker_page_reads_the_replica_and_falls_back_when_it_stops(
    pair: Pair, services: dict[str, str], state_dir: Path
) -> None:
    """Last in the module: it stops the replica."""
    user = f"page-{uuid.uuid4().hex[:8]}"
    await _set_budget(pair.primary.url, user, "10")
    await _replicated(pair, user, "10")
    worker = new_worker(
        services
        | {
            "SCRIBE_DATABASE_URL": pair.primary.url,
            "SCRIBE_DATABASE_READ_URL": pair.replica.url,
            "SCRIBE_DATABASE_READ_MAX_LAG_S": "3600",
            # Measured once: the replica stopping below is found by the read it fails.
            "SCRIBE_DATABASE_READ_CHECK_S": "3600",
        },
        state_dir / "replica-workers",
    ).start()
    try:
        await _page_reads_replica_then_primary(pair, worker, user)
    except BaseException:
        print(worker.log_tail(80))  # shown with the failure
        raise
    finally:
        worker.stop()


async def _page_budget(client: httpx.AsyncClient, user: str) -> Decimal:
    response = await client.get("/costs/report", params={"user": user})
    assert response.status_code == 200, response.text
    return Decimal(response.json()["budget_usd"])


async def _page_reads_replica_then_primary(pair: Pair, worker: WorkerProcess, user: str) -> None:
    async with httpx.AsyncClient(base_url=worker.url, timeout=30) as client:
        replica = await _connect(pair.replica.url)
        try:
            await _pause_replay(replica)
            await _set_budget(pair.primary.url, user, "20")
            assert await _page_budget(client, user) == 10  # what the replica has applied
            sessions = await replica.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                READ_APPLICATION_NAME,
            )
            assert sessions >= 1  # the worker's read pool is connected to the replica
            assert worker.metric(FALLBACKS) == 0
        finally:
            await replica.execute("SELECT pg_wal_replay_resume()")
            await replica.close()

        pair.replica.stop()
        # The read fails on the replica's closed connections and is asked of the primary.
        # (The worker's cost-total refresh, every 10 s, reads too: counts only grow by it.)
        assert await _page_budget(client, user) == 20
        unreachable = worker.metric(FALLBACKS, reason="unreachable")
        assert unreachable >= 1
        assert await _page_budget(client, user) == 20  # on the primary, until measured again
        assert worker.metric(FALLBACKS, reason="unreachable") >= unreachable + 1
        assert worker.metric(FALLBACKS, reason="lagging") == 0
