"""World persistence in PostgreSQL, the durable truth of every world.

`write` stores one batch in one transaction: the log rows (`world_events`), the ids of the
player events applied (`world_event_ids`), memories, and for each world touched its new log
head (and, every few seconds, a checkpoint of its state) in `world_state`. Each head names
the head it continues; if the stored head is another, another writer got there first and the
batch is refused with `WorldConflictError` naming the worlds, so two workers can never
interleave one world's log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import NamedTuple

import asyncpg
from asyncpg.pool import PoolConnectionProxy

RETRYABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)
MONTHS_AHEAD = 2

Connection = asyncpg.Connection | PoolConnectionProxy


class LogRow(NamedTuple):
    """One `world_events` row: an input (ordinal 0) or something it caused (ordinal >= 1).
    A tuple in `LOG_COLUMNS` order, so a batch's rows go to the binary COPY as they are (one
    is made per tick: a tuple is cheaper to make than a frozen dataclass)."""

    world_id: str
    seq: int
    ordinal: int
    event_id: str
    type: str
    source: str  # 'event', 'tick' or 'derived'
    tick: int
    payload: str  # JSON text
    occurred_at: datetime
    producer_version: int | None = None


LOG_COLUMNS = tuple(LogRow._fields)


@dataclass(frozen=True)
class MemoryRow:
    world_id: str
    memory_id: str
    npc_id: str | None
    content: str
    importance: int
    tick: int
    occurred_at: datetime


@dataclass(frozen=True)
class Checkpoint:
    """A world's state at its new head, in canonical JSON, with its hash."""

    tick: int
    state_json: str
    state_hash: str


@dataclass(frozen=True)
class WorldHead:
    """Where a world's log ends after a batch, its scheduling facts, and sometimes a
    checkpoint of its state there (always for a world stored for the first time)."""

    world_id: str
    base_version: int  # the stored head this batch continues (0: a new world)
    head_version: int
    active: bool
    last_activity_at: datetime | None
    next_tick_at: datetime | None
    checkpoint: Checkpoint | None = None


@dataclass
class WorldBatch:
    rows: list[LogRow] = field(default_factory=list)
    heads: list[WorldHead] = field(default_factory=list)
    memories: list[MemoryRow] = field(default_factory=list)
    event_ids: list[tuple[str, str, int]] = field(default_factory=list)

    def without(self, world_ids: set[str]) -> WorldBatch:
        return WorldBatch(
            [r for r in self.rows if r.world_id not in world_ids],
            [h for h in self.heads if h.world_id not in world_ids],
            [m for m in self.memories if m.world_id not in world_ids],
            [e for e in self.event_ids if e[0] not in world_ids],
        )


@dataclass(frozen=True)
class StoredWorld:
    """A world's checkpoint (`version`, `tick`, state) and the head of its log."""

    world_id: str
    version: int
    tick: int
    state_json: str
    state_hash: str
    head_version: int
    active: bool
    last_activity_at: datetime | None
    next_tick_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class LogRecord:
    """A stored input as replay reads it."""

    seq: int
    source: str
    tick: int
    event_id: str
    type: str
    payload: str
    occurred_at: datetime
    producer_version: int | None


class WorldConflictError(RuntimeError):
    """Another writer changed these worlds since this worker loaded them."""

    def __init__(self, world_ids: set[str]) -> None:
        super().__init__(
            f"{len(world_ids)} world(s) were written by another worker since they were loaded: "
            f"{', '.join(sorted(world_ids)[:10])}"
        )
        self.world_ids = world_ids


_LOAD = """
SELECT world_id, version, tick, state::text AS state_json, state_hash,
       coalesce(head_version, version) AS head_version, active, last_activity_at,
       next_tick_at, updated_at
FROM world_state WHERE world_id = ANY($1::text[])
"""

_LOAD_ACTIVE = """
SELECT world_id, version, tick, state::text AS state_json, state_hash,
       coalesce(head_version, version) AS head_version, active, last_activity_at,
       next_tick_at, updated_at
FROM world_state WHERE active
"""

_UPSERT_CHECKPOINTS = """
INSERT INTO world_state AS w (world_id, version, tick, state, state_hash, head_version, active,
                              last_activity_at, next_tick_at, updated_at)
SELECT b.world_id, b.version, b.tick, b.state::jsonb, b.state_hash, b.version, b.active,
       b.last_activity_at, b.next_tick_at, now()
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::boolean[],
            $7::timestamptz[], $8::timestamptz[])
     AS b(world_id, version, tick, state, state_hash, active, last_activity_at, next_tick_at)
ON CONFLICT (world_id) DO UPDATE SET
    version = EXCLUDED.version,
    tick = EXCLUDED.tick,
    state = EXCLUDED.state,
    state_hash = EXCLUDED.state_hash,
    head_version = EXCLUDED.head_version,
    active = EXCLUDED.active,
    last_activity_at = EXCLUDED.last_activity_at,
    next_tick_at = EXCLUDED.next_tick_at,
    updated_at = now()
RETURNING world_id, (xmax = 0) AS inserted
"""

# Locks the batch's worlds in world_id order (so two writers of overlapping worlds cannot
# deadlock) and, in the same statement, moves the heads of those without a checkpoint in this
# batch, each only if the stored head is the one the batch continues. Returns every stored
# world with its head before the batch: the caller refuses the batch (rolling the moves back)
# if any head was not the one its world continues.
_LOCK_AND_MOVE_HEADS = """
WITH locked AS (
    SELECT world_id, coalesce(head_version, version) AS head_version FROM world_state
    WHERE world_id = ANY($1::text[]) ORDER BY world_id FOR UPDATE
), moved AS (
    UPDATE world_state AS w SET
        head_version = b.head_version,
        active = b.active,
        last_activity_at = b.last_activity_at,
        next_tick_at = b.next_tick_at,
        updated_at = now()
    FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::boolean[], $6::timestamptz[],
                $7::timestamptz[])
         AS b(world_id, base_version, head_version, active, last_activity_at, next_tick_at),
         locked
    WHERE w.world_id = b.world_id AND locked.world_id = b.world_id
      AND locked.head_version = b.base_version
)
SELECT world_id, head_version FROM locked
"""

_INSERT_EVENT_IDS = """
INSERT INTO world_event_ids (world_id, event_id, seq)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
"""

_INSERT_MEMORIES = """
INSERT INTO memories (world_id, memory_id, npc_id, content, importance, tick, occurred_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::smallint[],
                     $6::bigint[], $7::timestamptz[])
ON CONFLICT (world_id, memory_id) DO NOTHING
"""


def _month(day: date) -> date:
    return day.replace(day=1)


def _months_of(rows: Sequence[LogRow]) -> set[date]:
    """The months the rows fall in. A batch is nearly always within one month: its earliest
    and latest times tell, so the rows are not each converted."""
    if not rows:
        return set()
    times = [r.occurred_at for r in rows]
    first = _month(min(times).astimezone(UTC).date())
    if first == _month(max(times).astimezone(UTC).date()):
        return {first}
    return {_month(t.astimezone(UTC).date()) for t in times}


def _months_ahead(today: date, count: int) -> list[date]:
    months = []
    year, month = today.year, today.month
    for _ in range(count + 1):
        months.append(date(year, month, 1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


class WorldStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._months_ready: set[date] = set()
        self._ahead_checked: date | None = None

    async def _ensure_partitions(self, conn: Connection, rows: Sequence[LogRow]) -> None:
        today = datetime.now(UTC).date()
        wanted = _months_of(rows)
        if self._ahead_checked != today:
            wanted.update(_months_ahead(today, MONTHS_AHEAD))
        for month in sorted(wanted - self._months_ready):
            await conn.execute("SELECT scribe_ensure_month_partition('world_events', $1)", month)
            self._months_ready.add(month)
        self._ahead_checked = today

    async def write(self, batch: WorldBatch) -> None:
        """Store the batch, or raise `WorldConflictError` (nothing stored) naming the worlds that
        another writer changed."""
        async with self.pool.acquire() as conn:
            await self._ensure_partitions(conn, batch.rows)
            async with conn.transaction():
                await self._write_heads(conn, batch.heads)
                if batch.event_ids:
                    await conn.execute(
                        _INSERT_EVENT_IDS,
                        [w for w, _, _ in batch.event_ids],
                        [e for _, e, _ in batch.event_ids],
                        [s for _, _, s in batch.event_ids],
                    )
                if batch.rows:
                    # Binary COPY: no statement to parse and no arrays to build per column;
                    # PostgreSQL routes each row to its month's partition.
                    await conn.copy_records_to_table(
                        "world_events", records=batch.rows, columns=LOG_COLUMNS
                    )
                if batch.memories:
                    mems = batch.memories
                    await conn.execute(
                        _INSERT_MEMORIES,
                        [m.world_id for m in mems],
                        [m.memory_id for m in mems],
                        [m.npc_id for m in mems],
                        [m.content for m in mems],
                        [m.importance for m in mems],
                        [m.tick for m in mems],
                        [m.occurred_at for m in mems],
                    )

    async def _write_heads(self, conn: Connection, heads: Sequence[WorldHead]) -> None:
        if not heads:
            return
        ids = [h.world_id for h in heads]
        if len(set(ids)) != len(ids):
            raise ValueError("a batch holds one head per world")
        moved = [h for h in heads if h.checkpoint is None]
        stored = {
            row["world_id"]: row["head_version"]
            for row in await conn.fetch(
                _LOCK_AND_MOVE_HEADS,
                ids,
                [h.world_id for h in moved],
                [h.base_version for h in moved],
                [h.head_version for h in moved],
                [h.active for h in moved],
                [h.last_activity_at for h in moved],
                [h.next_tick_at for h in moved],
            )
        }
        conflicts = {h.world_id for h in heads if stored.get(h.world_id, 0) != h.base_version}
        if conflicts:
            raise WorldConflictError(conflicts)
        unseen = [h.world_id for h in moved if h.world_id not in stored]
        if unseen:
            raise ValueError(f"a world's first write needs a checkpoint: {unseen[:5]}")
        checkpoints = [(h, h.checkpoint) for h in heads if h.checkpoint is not None]
        if checkpoints:
            written = await conn.fetch(
                _UPSERT_CHECKPOINTS,
                [h.world_id for h, _ in checkpoints],
                [h.head_version for h, _ in checkpoints],
                [c.tick for _, c in checkpoints],
                [c.state_json for _, c in checkpoints],
                [c.state_hash for _, c in checkpoints],
                [h.active for h, _ in checkpoints],
                [h.last_activity_at for h, _ in checkpoints],
                [h.next_tick_at for h, _ in checkpoints],
            )
            # A world absent above but inserted by another writer meanwhile was updated, not
            # inserted: that is a conflict too.
            raced = {row["world_id"] for row in written if not row["inserted"]} - stored.keys()
            if raced:
                raise WorldConflictError(raced)

    async def load(self, world_ids: Sequence[str]) -> list[StoredWorld]:
        rows = await self.pool.fetch(_LOAD, list(world_ids))
        return [StoredWorld(**dict(row)) for row in rows]

    async def load_active(self) -> list[StoredWorld]:
        rows = await self.pool.fetch(_LOAD_ACTIVE)
        return [StoredWorld(**dict(row)) for row in rows]

    async def known_event_ids(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (world_id, event_id) pairs were already applied."""
        if not pairs:
            return set()
        rows = await self.pool.fetch(
            "SELECT i.world_id, i.event_id FROM world_event_ids i "
            "JOIN unnest($1::text[], $2::text[]) AS p(world_id, event_id) "
            "USING (world_id, event_id)",
            [w for w, _ in pairs],
            [e for _, e in pairs],
        )
        return {(row["world_id"], row["event_id"]) for row in rows}


async def logged_inputs(
    conn: Connection, world_id: str, up_to: int, after: int = 0, chunk: int = 5000
) -> AsyncIterator[list[LogRecord]]:
    """A world's stored inputs with `after` < seq <= `up_to`, in order, a chunk at a time."""
    while after < up_to:
        rows = await conn.fetch(
            "SELECT seq, source, tick, event_id, type, payload::text AS payload, occurred_at, "
            "producer_version FROM world_events "
            "WHERE world_id = $1 AND ordinal = 0 AND seq > $2 AND seq <= $3 "
            "ORDER BY seq LIMIT $4",
            world_id,
            after,
            up_to,
            chunk,
        )
        if not rows:
            return
        yield [LogRecord(**dict(row)) for row in rows]
        after = rows[-1]["seq"]
