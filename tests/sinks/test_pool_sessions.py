"""What a pooled connection costs on its way back to the pool, on a real PostgreSQL: no
statement of its own, yet a transaction left open is still rolled back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from sinks.postgres.databases import keep_session

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1, reset=keep_session)
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_released_connection_sends_nothing_more(pool: asyncpg.Pool) -> None:
    sent: list[str] = []
    async with pool.acquire() as conn:
        conn.add_query_logger(lambda query: sent.append(query.query))
        assert await conn.fetchval("SELECT 1") == 1
    async with pool.acquire() as conn:  # the same connection: the pool holds one
        assert await conn.fetchval("SELECT 2") == 2
    # asyncpg's default reset would have sent its RESET ALL between the two.
    assert sent == ["SELECT 1", "SELECT 2"]


async def test_a_transaction_left_open_is_rolled_back_on_release(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS kept (n int)")
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("INSERT INTO kept VALUES (1)")
        # Released without a commit, as a cancelled write would be.
    async with pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM kept") == 0
