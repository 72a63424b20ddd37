"""The world tables on a real PostgreSQL: partitions, indexes, atomic conflict-checked writes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone

import asyncpg
import pytest

from agents.world.model import WorldState, canonical_json, state_hash
from sinks.postgres.migrate import migrate
from sinks.postgres.world import (
    Checkpoint,
    LogRow,
    MemoryRow,
    WorldBatch,
    WorldConflictError,
    WorldHead,
    WorldStore,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[WorldStore]:
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        yield WorldStore(pool)
    finally:
        await pool.close()


def head(world_id: str, base: int, version: int, checkpoint: bool = True) -> WorldHead:
    """A real (empty) world's head, stored inactive so no worker picks it up to tick."""
    state = WorldState(world_id, version=version)
    saved = Checkpoint(0, canonical_json(state).decode(), state_hash(state)) if checkpoint else None
    return WorldHead(world_id, base, version, False, None, None, saved)


def row(world_id: str, seq: int, when: datetime, payload: str = "{}") -> LogRow:
    return LogRow(world_id, seq, 0, f"e-{seq}", "npc_moved", "event", 0, payload, when)


async def test_world_events_is_partitioned_by_month_with_months_ahead(
    store: WorldStore, db: asyncpg.Connection
) -> None:
    partitions = {
        r["relname"]
        for r in await db.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'world_events'::regclass"
        )
    }
    today = datetime.now(UTC).date()
    month = date(today.year, today.month, 1)
    assert f"world_events_y{month:%Y}m{month:%m}" in partitions
    assert len(partitions) >= 3


async def test_a_write_for_a_new_month_creates_its_partition(
    store: WorldStore, db: asyncpg.Connection
) -> None:
    w = f"w-store-{uuid.uuid4().hex[:8]}"
    far = datetime(2031, 7, 9, tzinfo=UTC)
    await store.write(WorldBatch(rows=[row(w, 1, far)], heads=[head(w, 0, 1)]))
    assert await db.fetchval("SELECT to_regclass('world_events_y2031m07') IS NOT NULL")
    assert await db.fetchval("SELECT count(*) FROM world_events_y2031m07 WHERE world_id = $1", w)


async def test_a_batch_across_months_creates_each_month_it_holds_in_utc(
    store: WorldStore, db: asyncpg.Connection
) -> None:
    w = f"w-store-{uuid.uuid4().hex[:8]}"
    may = datetime(2032, 5, 2, tzinfo=UTC)
    march = datetime(2032, 3, 9, tzinfo=UTC)
    # 31 March at UTC-2 is already 1 April in UTC: it goes to April's partition.
    april = datetime(2032, 3, 31, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    rows = [row(w, 1, may), row(w, 2, april), row(w, 3, march)]
    await store.write(WorldBatch(rows=rows, heads=[head(w, 0, 3)]))
    for month, seq in (("03", 3), ("04", 2), ("05", 1)):
        stored = await db.fetch(
            f"SELECT seq FROM world_events_y2032m{month} WHERE world_id = $1", w
        )
        assert [r["seq"] for r in stored] == [seq]


async def test_memories_are_hash_partitioned_into_16_and_searchable(
    store: WorldStore, db: asyncpg.Connection
) -> None:
    count = await db.fetchval(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'memories'::regclass"
    )
    assert count == 16
    w = f"w-mem-{uuid.uuid4().hex[:8]}"
    memory = MemoryRow(
        w, "m-1", "npc-1", "The harvest festivals were loud", 5, 3, datetime.now(UTC)
    )
    await store.write(WorldBatch(memories=[memory], heads=[head(w, 0, 1)]))
    found = await db.fetchval(
        "SELECT memory_id FROM memories WHERE world_id = $1 "
        "AND content_search @@ plainto_tsquery('english', 'harvest festival')",
        w,
    )
    assert found == "m-1"


async def test_indexes_serve_payload_and_text_search(
    store: WorldStore, db: asyncpg.Connection
) -> None:
    definitions = {
        r["indexname"]: r["indexdef"]
        for r in await db.fetch(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE tablename IN ('world_events', 'memories')"
        )
    }
    assert "jsonb_path_ops" in definitions["world_events_payload"]
    assert "gin (content_search)" in definitions["memories_content_search"]
    trigram = await db.fetchval(
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'"
    )
    assert ("memories_content_trgm" in definitions) == bool(trigram)


async def test_a_stale_head_is_refused_and_nothing_of_its_batch_is_stored(
    store: WorldStore, db: asyncpg.Connection
) -> None:
    w, other = f"w-c-{uuid.uuid4().hex[:8]}", f"w-ok-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    await store.write(WorldBatch(rows=[row(w, 1, now)], heads=[head(w, 0, 1)]))
    stale = WorldBatch(
        rows=[row(w, 2, now), row(other, 1, now)],
        heads=[head(w, 0, 2), head(other, 0, 1)],
        event_ids=[(w, "e-2", 2)],
    )
    with pytest.raises(WorldConflictError) as caught:
        await store.write(stale)
    assert caught.value.world_ids == {w}
    assert await db.fetchval("SELECT version FROM world_state WHERE world_id = $1", w) == 1
    assert await db.fetchval("SELECT count(*) FROM world_state WHERE world_id = $1", other) == 0
    assert await db.fetchval("SELECT count(*) FROM world_events WHERE world_id = $1", w) == 1

    await store.write(stale.without({w}))
    assert await db.fetchval("SELECT version FROM world_state WHERE world_id = $1", other) == 1


async def test_load_and_known_event_ids(store: WorldStore) -> None:
    w = f"w-load-{uuid.uuid4().hex[:8]}"
    await store.write(WorldBatch(heads=[head(w, 0, 3)], event_ids=[(w, "seen", 1)]))
    [stored] = await store.load([w, "w-never"])
    assert (stored.world_id, stored.version, stored.active) == (w, 3, False)
    assert await store.known_event_ids([(w, "seen"), (w, "new")]) == {(w, "seen")}


async def test_the_head_moves_without_a_checkpoint_and_the_first_write_needs_one(
    store: WorldStore, db: asyncpg.Connection
) -> None:
    w = f"w-head-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError, match="first write needs a checkpoint"):
        await store.write(WorldBatch(heads=[head(w, 0, 1, checkpoint=False)]))
    await store.write(WorldBatch(heads=[head(w, 0, 1)]))
    await store.write(WorldBatch(heads=[head(w, 1, 5, checkpoint=False)]))
    [stored] = await store.load([w])
    assert (stored.version, stored.head_version) == (1, 5)
    with pytest.raises(WorldConflictError):
        await store.write(WorldBatch(heads=[head(w, 1, 6, checkpoint=False)]))
    await store.write(WorldBatch(heads=[head(w, 5, 7)]))
    [stored] = await store.load([w])
    assert (stored.version, stored.head_version) == (7, 7)


async def test_heads_moved_before_a_conflict_was_found_are_rolled_back(
    store: WorldStore, db: asyncpg.Connection
) -> None:
    # The statement that locks the batch's worlds also moves the heads without a checkpoint;
    # a conflict found after it must undo those moves with the rest of the batch.
    moving, stale = sorted(f"w-rb-{n}-{uuid.uuid4().hex[:8]}" for n in range(2))
    now = datetime.now(UTC)
    await store.write(WorldBatch(heads=[head(moving, 0, 1), head(stale, 0, 3)]))
    with pytest.raises(WorldConflictError) as caught:
        await store.write(
            WorldBatch(
                rows=[row(moving, 2, now)],
                heads=[head(moving, 1, 2, checkpoint=False), head(stale, 1, 4, checkpoint=False)],
            )
        )
    assert caught.value.world_ids == {stale}
    heads = {
        r["world_id"]: r["head_version"]
        for r in await db.fetch(
            "SELECT world_id, head_version FROM world_state WHERE world_id = ANY($1::text[])",
            [moving, stale],
        )
    }
    assert heads == {moving: 1, stale: 3}
    assert await db.fetchval("SELECT count(*) FROM world_events WHERE world_id = $1", moving) == 0
