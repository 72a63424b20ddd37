"""Under load the usage sink stages a batch (its own transaction, not yet committed) while the
batch before it is still written. Events in both batches are counted once; a staged batch that
is discarded, or left staged at close, leaves no transaction open."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from agents.usage.store import LedgerSink
from runtime.source import Received, Record
from schemas.events import UsageEvent
from schemas.examples import example
from sinks.postgres.migrate import migrate
from sinks.postgres.usage import LedgerWrite, PricedUsage, StagedBatch, UsageLedger

pytestmark = pytest.mark.integration

COST = Decimal("0.25")
# The test pool's connections, found by this name among the server's.
APPLICATION = f"staged-{uuid.uuid4().hex[:8]}"


def priced(prefix: str, count: int) -> list[PricedUsage]:
    now = datetime.now(UTC).replace(microsecond=0)
    return [
        PricedUsage(
            example(
                UsageEvent,
                event_id=f"{prefix}{n:03d}",
                user_id=f"{prefix}user-{n % 3}",
                cost_usd=COST,
                occurred_at=now,
            ),
            COST,
            None,
        )
        for n in range(count)
    ]


async def counted(db: asyncpg.Connection, prefix: str) -> tuple[int, Decimal | None]:
    """The ledger's rows and the monthly rollups' sum for these users."""
    rows = await db.fetchval(
        "SELECT count(*) FROM usage_events WHERE user_id LIKE $1 || '%'", prefix
    )
    spent = await db.fetchval(
        "SELECT sum(cost_usd) FROM usage_monthly WHERE user_id LIKE $1 || '%'", prefix
    )
    return rows, spent


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=3, server_settings={"application_name": APPLICATION}
    )
    try:
        yield pool
    finally:
        await pool.close()


async def open_transactions(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = $1 AND state LIKE 'idle in transaction%'",
        APPLICATION,
    )
    return count


async def test_events_in_a_batch_staged_before_the_one_before_commits_count_once(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    prefix = f"ahead-{uuid.uuid4().hex[:8]}-"
    events = priced(prefix, 20)
    first, second = events[:12], events[8:]  # four events in both: a producer's retry
    ledger = UsageLedger(pool, (50, 80, 100))

    staged = await ledger.stage(second)  # while the first batch is not yet written
    assert staged is not None
    assert (await ledger.write(first)).inserted == 12
    assert (await ledger.write(second, staged)).inserted == 8

    assert await counted(db, prefix) == (20, COST * 20)
    assert await open_transactions(db) == 0


async def no_send(records: object) -> None:
    pass


async def no_dead_letter(record: Record, kind: str, reason: str) -> None:
    raise AssertionError(f"dead-lettered: {reason}")


def ledger_sink(pool: asyncpg.Pool) -> LedgerSink:
    return LedgerSink(pool, (50, 80, 100), no_send, no_dead_letter)


def received(events: list[PricedUsage]) -> list[Received[PricedUsage]]:
    return [Received(p, Record("usage.events", 0, n, None, b"{}")) for n, p in enumerate(events)]


async def test_a_staged_batch_not_written_is_released(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    prefix = f"ahead-{uuid.uuid4().hex[:8]}-"
    batch = received(priced(prefix, 10))
    sink = ledger_sink(pool)

    await sink.prepare(batch)
    assert await open_transactions(db) == 1
    await sink.write(batch[:6])  # a rebalance cut the batch down: that part is staged anew
    assert await counted(db, prefix) == (6, COST * 6)
    await sink.discard(batch)  # as the runner does with a prepared batch it did not write
    assert await open_transactions(db) == 0

    await sink.prepare(batch)
    await sink.write(batch)  # the staged batch itself: the ledger takes the four new ones
    assert await counted(db, prefix) == (10, COST * 10)

    await sink.prepare(batch)
    assert await open_transactions(db) == 1
    await sink.close()  # the staged transaction is rolled back before the pool closes
    assert await counted(db, prefix) == (10, COST * 10)


async def test_a_staged_batch_holds_no_lock_the_write_before_it_needs(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    """The batch before a staged one may be written again after it was staged (a retry, or a
    part of it after a rebalance): if staging had locked the users' budget rows, that write
    would wait for a transaction that waits for it."""
    prefix = f"ahead-{uuid.uuid4().hex[:8]}-"
    events = priced(prefix, 12)
    users = sorted({p.event.user_id for p in events})
    await db.executemany(
        "INSERT INTO budgets (user_id, monthly_usd) VALUES ($1, 100)", [(u,) for u in users]
    )
    ledger = UsageLedger(pool, (50, 80, 100))

    staged = await ledger.stage(events[6:])  # the same users as the batch before it
    assert staged is not None
    try:
        async with asyncio.timeout(10):
            assert (await ledger.write(events[:6])).inserted == 6
    finally:
        # Rolled back (the batch is staged anew below), so a failure cannot leave the pool
        # waiting for it at teardown.
        await staged.release()
    assert (await ledger.write(events[6:])).inserted == 6
    assert await counted(db, prefix) == (12, COST * 12)


async def test_a_retried_write_gives_back_the_batch_staged_after_it(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    """A write retried while PostgreSQL is unreachable may retry for as long as it is down: the
    batch staged after it does not keep a connection and an open transaction meanwhile."""
    prefix = f"ahead-{uuid.uuid4().hex[:8]}-"
    events = received(priced(prefix, 12))
    first, second = events[:6], events[6:]
    sink = ledger_sink(pool)
    await sink.prepare(second)
    assert await open_transactions(db) == 1

    written = sink.ledger.write
    open_during_retry: list[int] = []

    async def reset_once(
        priced: Sequence[PricedUsage], staged: StagedBatch | None = None
    ) -> LedgerWrite:
        if not open_during_retry:
            open_during_retry.append(-1)
            raise ConnectionResetError("connection reset by peer")  # retryable: OSError
        open_during_retry.append(await open_transactions(db))
        return await written(priced, staged)

    sink.ledger.write = reset_once  # type: ignore[method-assign]
    await sink.write(first)
    assert open_during_retry == [-1, 0]
    await sink.write(second)  # staged again by its own write
    assert await counted(db, prefix) == (12, COST * 12)
    await sink.close()
