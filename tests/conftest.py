"""Fixtures: the embedded stack (or the services SCRIBE_*_URL name) and a real worker."""

from __future__ import annotations

import shutil
import sys
import tempfile
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from devkit.harness import WorkerProcess, new_worker, services_for_tests
from runtime.settings import kafka_bootstrap_servers
from topics.publisher import Publisher

# Short world-simulation intervals, so the world tests see ticks and idling within seconds; a
# short CDN retry deadline, so the test of a CDN that stays down sees its dead letter within
# seconds (the default, 15 minutes, is tested by tests/engine/test_cdn_outage.py).
CDN_RETRY_DEADLINE_S = 8
WORKER_TEST_SETTINGS = {
    "SCRIBE_WORLD_TICK_SECONDS": "0.2",
    "SCRIBE_WORLD_IDLE_SECONDS": "3",
    "SCRIBE_CDN_RETRY_DEADLINE_S": str(CDN_RETRY_DEADLINE_S),
}


def pytest_configure(config: pytest.Config) -> None:
    name_where_http_sessions_are_made()


def name_where_http_sessions_are_made() -> None:
    """An aiohttp session collected while open is reported ("Unclosed client session", at
    times after the summary) with where it was made only on a loop in debug mode, which would
    slow every test. Each session made in the tests records that itself (a few frames, once per
    session), so the report names the code that left it open."""
    made = aiohttp.ClientSession.__init__

    def init(session: aiohttp.ClientSession, *args: object, **kwargs: object) -> None:
        made(session, *args, **kwargs)  # type: ignore[arg-type]
        if session._source_traceback is None:
            session._source_traceback = traceback.extract_stack(sys._getframe(1), limit=12)

    aiohttp.ClientSession.__init__ = init  # type: ignore[method-assign, assignment]


@pytest.fixture(scope="session")
def state_dir() -> Iterator[Path]:
    """Outside pytest's tmp tree: pytest resets that tree to mode 0700 when another session
    starts, which would lock out the embedded PostgreSQL (it runs as its own user as root)."""
    path = Path(tempfile.mkdtemp(prefix="scribe-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def services(state_dir: Path) -> Iterator[dict[str, str]]:
    with services_for_tests(state_dir / "stack") as env:
        yield env


@pytest.fixture(scope="session")
def kafka_url(services: dict[str, str]) -> str:
    return services["SCRIBE_KAFKA_URL"]


@pytest.fixture(scope="session")
def database_url(services: dict[str, str]) -> str:
    return services["SCRIBE_DATABASE_URL"]


@pytest.fixture(scope="session")
def worker(services: dict[str, str], state_dir: Path) -> Iterator[WorkerProcess]:
    """One worker shared by the integration tests; each test uses its own ids."""
    process = new_worker(services | WORKER_TEST_SETTINGS, state_dir / "workers").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def redis_client(services: dict[str, str]) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(services["SCRIBE_REDIS_URL"])
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def publisher(kafka_url: str) -> AsyncIterator[Publisher]:
    async with Publisher(kafka_bootstrap_servers(kafka_url)) as pub:
        yield pub
