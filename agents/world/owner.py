"""The worlds one worker owns, held in memory and written through to PostgreSQL.

Ownership follows the partitions of `world.events` and `world.ticks`: both are keyed by
world_id with the same partition count, and the consumer's range assignor gives partition p of
both to one worker.
A world is loaded from PostgreSQL (its checkpoint plus the inputs logged after it) when its
first message arrives, or (if it is still active) when its partition is assigned, and dropped
when the partition is revoked. PostgreSQL, not a Faust changelog, is what a restarted worker
recovers from: the embedded broker answers end offsets wrongly, so changelog recovery could
not be trusted there.

Every change to a world happens synchronously in memory (apply an event, step a tick) and
appends its rows to one pending batch; `flush` writes that batch in one transaction (a group
commit shared by the consumer and the timer), then announces the changes on
`cache.invalidations`. The consumer commits a batch's offsets only after the batch was flushed,
so Kafka offsets never run ahead of what PostgreSQL holds, and the stored log is always a
prefix of what was applied.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from agents.intake import Received
from agents.world.apply import Applied, Duplicate, apply_event, recorded_memory
from agents.world.history import rebuild_from_log
from agents.world.invalidation import WorldInvalidation, invalidations_for
from agents.world.model import DerivedEvent, WorldState, canonical_json, state_hash
from agents.world.replay import ReplayError
from agents.world.schedule import TickSchedule
from agents.world.step import step
from runtime.metrics import (
    SINK_BATCH_SIZE,
    WORLD_CONFLICTS,
    WORLD_EVENTS,
    WORLD_TICK_LAG_SECONDS,
    WORLD_TICK_OVERDUE_SECONDS,
    WORLD_TICKS,
    WORLD_TIMER_SECONDS,
    WORLDS_ACTIVE,
    observe_end_to_end,
)
from runtime.partitioner import partition_of
from schemas.events import WorldEvent, WorldTick
from sinks.postgres.world import (
    RETRYABLE,
    Checkpoint,
    LogRow,
    MemoryRow,
    StoredWorld,
    WorldBatch,
    WorldConflictError,
    WorldHead,
    WorldStore,
)
from sinks.retry import until_written
from topics.catalog import WORLD_EVENTS as WORLD_EVENTS_TOPIC
from topics.catalog import WORLD_TICKS as WORLD_TICKS_TOPIC
from topics.dlq import DeadLetters

log = logging.getLogger(__name__)

# A tick message may move a world at most this far at once (ten in-world days); further is
# refused to the DLQ rather than blocking the worker for an unbounded catch-up.
MAX_TICK_JUMP = 1440
# Ticks the timer applies per round across all worlds; the rest stay due for the next round.
ROUND_BUDGET = 2000
# A round that applied at least this many ticks is followed at once by the next, which takes
# what fell due while this one was written; a smaller one ends the timer's call.
FOLLOW_ROUNDS_OF = 200
# The timer yields to the event loop after this many ticks (5-9 ms of stepping), so consumers,
# heartbeats and the answers of PostgreSQL and Kafka are read: each of a write's round trips
# waits for the loop. At 200 ticks a 5,000-world worker's loop woke 30-31 ms late on average
# and a write took 166-178 ms; at 50, 14-22 ms and 128-130 ms (bench/README.md).
YIELD_EVERY = 50
# Ticks this many intervals overdue after a round mean the worker cannot keep up: warned, at
# most once per `BEHIND_WARNING_EVERY_S`.
BEHIND_INTERVALS = 10
BEHIND_WARNING_EVERY_S = 60.0

# The `agent` label of each input's metrics (the consumer is no Faust agent).
EVENTS_AGENT = "world-events"
TICKS_AGENT = "world-ticks"

Publish = Callable[[list[WorldInvalidation]], Awaitable[None]]


def _completed() -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


def partition_for(world_id: str, partitions: int) -> int:
    """The partition a producer's default (murmur2) partitioner puts this world's key in."""
    return partition_of(world_id.encode(), partitions)


def _payload_json(payload: dict[str, Any]) -> str:
    # JSON numbers with a fraction arrive as Decimal; store them exactly as numbers.
    def exact(value: Any) -> Any:
        if isinstance(value, Decimal):
            return orjson.Fragment(str(value).encode())
        raise TypeError(f"cannot store {type(value).__name__} in a payload")

    return orjson.dumps(payload, default=exact).decode()


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def checkpoint_interval(world_id: str, seconds: float) -> float:
    """Between one and two times `seconds`, spread by world id, so worlds loaded together do
    not checkpoint together."""
    return seconds * (1 + (zlib.crc32(world_id.encode()) % 1000) / 1000)


class WorldUnavailableError(RuntimeError):
    """A stored world that cannot be rebuilt: its checkpoint is unusable and its log does not
    reach its head. Its messages are dead-lettered rather than applied to a guessed state."""

    def __init__(self, world_id: str, reason: str) -> None:
        super().__init__(f"world {world_id} cannot be loaded: {reason}")
        self.world_id = world_id


@dataclass
class OwnedWorld:
    state: WorldState
    partition: int
    stored: WorldState | None  # as of the last write to PostgreSQL; None: never written
    checkpoint_due_at: float = 0.0  # 0: at the next write
    # As of the last write whose invalidations were built: they trail `stored` while
    # the writes before them publish.
    announced: WorldState | None = None


@dataclass
class _Pending:
    batch: WorldBatch = field(default_factory=WorldBatch)
    dirty: dict[str, None] = field(default_factory=dict)  # ordered set of world ids
    tick_lags: list[tuple[str, float]] = field(default_factory=list)  # (source, due at)

    def empty(self) -> bool:
        return not self.dirty and not self.batch.rows


@dataclass
class _Written:
    """A stored write, for its metrics and invalidations."""

    stored_at: float
    batch: WorldBatch
    tick_lags: list[tuple[str, float]]
    changed: list[tuple[OwnedWorld, WorldState, bool]] = field(default_factory=list)  # checkpointed


class WorldOwner:
    def __init__(
        self,
        store: WorldStore,
        publish: Publish,
        dead_letters: DeadLetters,
        *,
        tick_seconds: float,
        idle_seconds: float,
        catch_up: int,
        checkpoint_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.publish = publish
        self.dead_letters = dead_letters
        self.clock = clock
        # A world's state is checkpointed every `checkpoint_seconds` (to twice that); in
        # between only its log head moves, and loading it replays the inputs logged since.
        self.checkpoint_seconds = checkpoint_seconds
        self.schedule = (
            TickSchedule(tick_seconds, idle_seconds, catch_up) if tick_seconds > 0 else None
        )
        self.worlds: dict[str, OwnedWorld] = {}
        self.partition_count: int | None = None
        self._owned: set[int] = set()
        self._unloaded: set[int] = set()  # assigned partitions whose active worlds to load
        self._pending = _Pending()
        self._flush_lock = asyncio.Lock()
        # The last write's invalidations being published; each waits for the one before.
        self._publishing: asyncio.Future[None] | None = None
        # Bumped whenever worlds are forgotten: a load that read PostgreSQL before the bump may
        # hold a world older than one this worker has written since, and must not adopt it.
        self._forgets = 0
        # When (in `_forgets`) each world last lost its unsaved changes to another writer, so
        # the input batch that applied them can apply them again.
        self._conflicted_at: dict[str, int] = {}
        self._warned_behind_at = -BEHIND_WARNING_EVERY_S  # monotonic
        # Looked up once: a labelled child costs a lock and a dict lookup per call.
        self._ticks_counted = {s: WORLD_TICKS.labels(source=s) for s in ("timer", "topic")}

    # -- ownership ------------------------------------------------------------------------

    def assigned(self, partitions: set[int], partition_count: int | None) -> None:
        """The worker now owns these partitions; their active worlds load on the next round."""
        self.partition_count = partition_count or self.partition_count
        self._unloaded |= partitions - self._owned
        self._owned = set(partitions)

    async def revoked(self, partitions: set[int]) -> None:
        """Checkpoint and write the worlds of partitions this worker lost, then forget them
        (also when the write fails: they are no longer this worker's to tick)."""
        lost = [w for w, owned in self.worlds.items() if owned.partition in partitions]
        for world_id in lost:
            self.worlds[world_id].checkpoint_due_at = 0.0
            self._pending.dirty[world_id] = None
        try:
            await self.flush()
        finally:
            self._owned -= partitions
            self._unloaded -= partitions
            self._forget(w for w, owned in self.worlds.items() if owned.partition in partitions)

    def _forget(self, world_ids: Iterable[str]) -> None:
        """Drop worlds from memory with their unwritten changes (a later owner re-derives
        ticks from the stored schedule; events are re-read from uncommitted offsets)."""
        gone = set(world_ids)
        self._forgets += 1
        for world_id in gone:
            self.worlds.pop(world_id, None)
            self._pending.dirty.pop(world_id, None)
            if self.schedule is not None:
                self.schedule.remove(world_id)
        self._pending.batch = self._pending.batch.without(gone)

    async def _adopt(self, stored: StoredWorld, partition: int, forgets: int) -> None:
        """Take a stored world into memory: its checkpoint, then the inputs logged after it.
        A checkpoint that does not read back to its own hash is ignored and the world is
        replayed from its whole log; if the log does not reach the stored head either, the
        world is unavailable (`WorldUnavailableError`) rather than guessed."""
        checkpoint: WorldState | None = None
        try:
            checkpoint = WorldState.from_dict(orjson.loads(stored.state_json))
            if state_hash(checkpoint) != stored.state_hash:
                raise ValueError("it does not match its hash")
            if checkpoint.version != stored.version:
                raise ValueError(f"it holds version {checkpoint.version}")
        except (KeyError, TypeError, ValueError) as exc:
            log.error(
                "world %s: checkpoint (version %d) is unusable (%s: %s); replaying the log",
                stored.world_id,
                stored.version,
                type(exc).__name__,
                exc,
            )
            checkpoint = None
        if checkpoint is not None and checkpoint.version == stored.head_version:
            state = checkpoint
        else:
            try:
                async with self.store.pool.acquire() as conn:
                    state = await rebuild_from_log(
                        conn, stored.world_id, stored.head_version, start=checkpoint
                    )
            except ReplayError as exc:
                raise WorldUnavailableError(stored.world_id, str(exc)) from exc
            if state.version != stored.head_version:
                raise WorldUnavailableError(
                    stored.world_id,
                    f"its log reaches version {state.version} but its head is "
                    f"{stored.head_version}",
                )
        if stored.world_id in self.worlds:
            return  # loaded by another path while this one waited
        if forgets != self._forgets:
            return  # read before worlds were forgotten: maybe older than what was written since
        due = self.clock() + checkpoint_interval(stored.world_id, self.checkpoint_seconds)
        self.worlds[stored.world_id] = OwnedWorld(state, partition, state, due, state)
        if self.schedule is not None and stored.active:
            now = self.clock()
            self.schedule.resume(
                stored.world_id,
                stored.next_tick_at.timestamp() if stored.next_tick_at else now,
                stored.last_activity_at.timestamp() if stored.last_activity_at else now,
            )

    async def _load(self, partition_of: dict[str, int], create_missing: bool) -> dict[str, str]:
        """Bring the named worlds into memory: from PostgreSQL, or (`create_missing`) new and
        empty. Returns the stored worlds that cannot be loaded, with the reason."""
        unavailable: dict[str, str] = {}
        missing = [w for w in partition_of if w not in self.worlds]
        while missing:
            forgets = self._forgets
            found = await until_written(
                "postgres.world_read", self.store.load, missing, retryable=RETRYABLE
            )
            for stored in found:
                try:
                    await self._adopt(stored, partition_of[stored.world_id], forgets)
                except WorldUnavailableError as exc:
                    log.error("%s", exc)
                    unavailable[exc.world_id] = str(exc)
            stored_ids = {stored.world_id for stored in found}
            if create_missing:
                for world_id in missing:
                    if world_id not in self.worlds and world_id not in stored_ids:
                        self.worlds[world_id] = OwnedWorld(
                            WorldState(world_id), partition_of[world_id], None
                        )
            missing = (
                [w for w in partition_of if w not in self.worlds and w not in unavailable]
                if create_missing
                else []
            )
        return unavailable

    async def _load_assigned(self) -> None:
        if not self._unloaded or self.schedule is None or not self.partition_count:
            return
        partitions, count = set(self._unloaded), self.partition_count
        forgets = self._forgets
        active = await until_written(
            "postgres.world_read", self.store.load_active, retryable=RETRYABLE
        )
        for stored in active:
            partition = partition_for(stored.world_id, count)
            owned = partition in partitions and partition in self._owned
            if owned and stored.world_id not in self.worlds:
                try:
                    await self._adopt(stored, partition, forgets)
                except WorldUnavailableError as exc:
                    log.error("%s; it does not tick", exc)
        if forgets != self._forgets:
            return  # some were not adopted (read too early): the next round loads them again
        self._unloaded -= partitions
        log.info("world: loaded active worlds of partitions %s", sorted(partitions))

    # -- inputs ---------------------------------------------------------------------------

    async def apply_events(self, batch: list[Received[WorldEvent]]) -> None:
        """Apply and store a batch. Events whose world lost its unsaved changes to another
        writer meanwhile are applied again on the world as stored: the batch is acknowledged
        when this returns, so dropping them would lose them."""
        while batch:
            since = self._forgets
            applied = await self._apply_events_once(batch)
            again = {w for w, at in self._conflicted_at.items() if at > since}
            batch = [item for item in applied if item.event.world_id in again]
            if batch:
                log.warning("world: applying %d event(s) again on their stored worlds", len(batch))

    async def _apply_events_once(
        self, batch: list[Received[WorldEvent]]
    ) -> list[Received[WorldEvent]]:
        known = await until_written(
            "postgres.world_read",
            self.store.known_event_ids,
            [(r.event.world_id, r.event.event_id) for r in batch],
            retryable=RETRYABLE,
        )
        # The last await before the loop: from here on every world of the batch is in memory,
        # unless it is unavailable.
        unavailable = await self._load({r.event.world_id: r.origin.partition for r in batch}, True)
        now = self.clock()
        rejects = []
        applied = []
        for item in batch:
            event = item.event
            if event.world_id in unavailable:
                rejects.append((item, "world_unavailable", unavailable[event.world_id]))
                continue
            world = self.worlds[event.world_id]
            if (event.world_id, event.event_id) in known:
                WORLD_EVENTS.labels(outcome="duplicate").inc()
                continue
            outcome = apply_event(world.state, event)
            if isinstance(outcome, Applied):
                self._record_event(world, event, outcome)
                applied.append(item)
                if self.schedule is not None:
                    self.schedule.touch(event.world_id, event.occurred_at.timestamp(), now)
                WORLD_EVENTS.labels(outcome="applied").inc()
            elif isinstance(outcome, Duplicate):
                WORLD_EVENTS.labels(outcome="duplicate").inc()
            else:
                rejects.append((item, outcome.kind, outcome.reason))
        for item, kind, reason in rejects:
            WORLD_EVENTS.labels(outcome="rejected").inc()
            await self.dead_letters.send(
                WORLD_EVENTS_TOPIC, item.origin, kind, reason, EVENTS_AGENT
            )
        await self.flush()
        return applied

    async def apply_ticks(self, batch: list[Received[WorldTick]]) -> None:
        """Ticks from producers: advance each world to the given tick; older ticks change
        nothing, ticks for worlds that never had an event are refused."""
        unavailable = await self._load({r.event.world_id: r.origin.partition for r in batch}, False)
        rejects = []
        for item in batch:
            message = item.event
            world = self.worlds.get(message.world_id)
            if message.world_id in unavailable:
                rejects.append((item, "world_unavailable", unavailable[message.world_id]))
                continue
            if world is None:
                rejects.append(
                    (
                        item,
                        "unknown_world",
                        f"world {message.world_id} has no state; a world begins with its "
                        "first event on world.events",
                    )
                )
                continue
            gap = message.tick - world.state.tick
            if gap > MAX_TICK_JUMP:
                rejects.append(
                    (
                        item,
                        "tick_gap",
                        f"world {message.world_id} is at tick {world.state.tick}; tick "
                        f"{message.tick} is more than {MAX_TICK_JUMP} ticks ahead",
                    )
                )
                continue
            due_at = message.occurred_at.timestamp()
            for _ in range(max(0, gap)):
                self._advance(world, due_at, "topic")
            self._ticks_counted["topic"].inc(max(0, gap))
        for item, kind, reason in rejects:
            await self.dead_letters.send(WORLD_TICKS_TOPIC, item.origin, kind, reason, TICKS_AGENT)
        await self.flush()

    async def tick_due(self) -> None:
        """Timer rounds, each followed at once by the next while it applied at least
        `FOLLOW_ROUNDS_OF` ticks: with that many falling due during one write, waiting the
        timer's interval would only make them later. A smaller round ends the call, so a
        lightly loaded worker lets ticks gather instead of writing every few. The next round
        is applied while the one before it is written (flushes stay in order: each takes what
        is pending under the flush lock); a round that ends with that write still in flight
        does not wait for it but goes in one write with the next, so the timer waits for
        PostgreSQL at most every other round. Within one tick interval of wall time, so a worker
        that stays behind still returns to its timer (which checks for a stop between calls);
        every round is written before this returns."""
        if self.schedule is None:
            return
        started = time.monotonic()
        writing: asyncio.Task[asyncio.Future[None]] | None = None
        published: list[asyncio.Future[None]] = []
        applying = waiting = 0.0
        grouped = False
        try:
            while True:
                round_started = time.monotonic()
                applied = await self._tick_round()
                round_ended = time.monotonic()
                applying += round_ended - round_started
                last = (
                    applied < FOLLOW_ROUNDS_OF
                    or self.schedule is None
                    or round_ended - started >= self.schedule.interval
                )
                if writing is not None:
                    if not writing.done() and not last and not grouped:
                        # The write before is still in flight: rather than wait for it, apply
                        # the next round, and this one goes in the same write as that one.
                        grouped = True
                        await asyncio.sleep(0)
                        continue
                    # Stored; its invalidations may still be on their way to Kafka.
                    published.append(await writing)
                    waiting += time.monotonic() - round_ended
                grouped = False
                writing = asyncio.create_task(self._store_pending())
                if last:
                    break
                await asyncio.sleep(0)  # the write takes this round's ticks before the next
        finally:
            draining = time.monotonic()
            if writing is not None:
                published.append(await writing)
            await asyncio.gather(*published)
        # Where a busy worker's time goes: applying, or waiting for PostgreSQL and Kafka.
        WORLD_TIMER_SECONDS.labels(phase="apply").inc(applying)
        WORLD_TIMER_SECONDS.labels(phase="wait_write").inc(waiting)
        WORLD_TIMER_SECONDS.labels(phase="drain").inc(time.monotonic() - draining)
        self._note_overdue()

    def _note_overdue(self) -> None:
        if self.schedule is None:
            return
        overdue = self.schedule.overdue_seconds(self.clock())
        WORLD_TICK_OVERDUE_SECONDS.set(overdue)
        if overdue < BEHIND_INTERVALS * self.schedule.interval:
            return
        now = time.monotonic()
        if now - self._warned_behind_at >= BEHIND_WARNING_EVERY_S:
            self._warned_behind_at = now
            log.warning(
                "world ticks are %.1f s overdue on this worker (%d active worlds): it cannot "
                "keep up; add workers (world.events needs as many partitions), or raise "
                "SCRIBE_WORLD_TICK_SECONDS",
                overdue,
                len(self.schedule),
            )

    async def _tick_round(self) -> int:
        """One round: load newly assigned active worlds, apply the ticks that are due (bounded
        per world and per round) and retire idle worlds, not yet written. Returns the ticks
        applied."""
        if self.schedule is None:
            return 0
        await self._load_assigned()
        round_ = self.schedule.due(self.clock(), ROUND_BUDGET)
        applied = 0
        for due in round_.due:
            for due_at in due.scheduled:
                world = self.worlds.get(due.world_id)
                if world is None:
                    break  # revoked while this round yielded
                self._advance(world, due_at, "timer")
                applied += 1
                if applied % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        self._ticks_counted["timer"].inc(applied)  # once per round: an inc takes a lock
        for world_id in round_.went_idle:
            if world_id in self.worlds:
                # Store active = false, with a checkpoint: the world may sleep a long time.
                self.worlds[world_id].checkpoint_due_at = 0.0
                self._pending.dirty[world_id] = None
        WORLDS_ACTIVE.set(len(self.schedule))
        return applied

    # -- recording ------------------------------------------------------------------------

    def _advance(self, world: OwnedWorld, due_at: float, source: str) -> None:
        state, derived = step(world.state, world.state.tick + 1)
        when = datetime.fromtimestamp(due_at, UTC)
        tick_id = f"tick-{state.tick}"
        rows = self._pending.batch.rows
        rows.append(
            LogRow(
                state.world_id, state.version, 0, tick_id, "tick", "tick", state.tick, "{}", when
            )
        )
        self._derived_rows(state, tick_id, derived, when)
        world.state = state
        self._pending.dirty[state.world_id] = None
        self._pending.tick_lags.append((source, due_at))

    def _record_event(self, world: OwnedWorld, event: WorldEvent, outcome: Applied) -> None:
        state = outcome.state
        self._pending.batch.rows.append(
            LogRow(
                state.world_id,
                state.version,
                0,
                event.event_id,
                event.type,
                "event",
                state.tick,
                _payload_json(event.payload.model_dump(mode="json")),
                event.occurred_at,
                event.version,
            )
        )
        self._derived_rows(state, event.event_id, outcome.derived, event.occurred_at)
        self._pending.batch.event_ids.append((state.world_id, event.event_id, state.version))
        memory = recorded_memory(event)
        if memory is not None:
            self._pending.batch.memories.append(
                MemoryRow(
                    state.world_id,
                    memory.memory_id,
                    memory.npc_id,
                    memory.content,
                    memory.importance,
                    state.tick,
                    event.occurred_at,
                )
            )
        world.state = state
        self._pending.dirty[state.world_id] = None

    def _derived_rows(
        self, state: WorldState, cause_id: str, derived: list[DerivedEvent], when: datetime
    ) -> None:
        rows = self._pending.batch.rows
        for ordinal, event in enumerate(derived, start=1):
            rows.append(
                LogRow(
                    state.world_id,
                    state.version,
                    ordinal,
                    f"{cause_id}#{ordinal}",
                    event.type,
                    "derived",
                    state.tick,
                    orjson.dumps(event.payload).decode(),
                    when,
                )
            )

    # -- writing --------------------------------------------------------------------------

    def _head(self, world: OwnedWorld, now: float) -> WorldHead:
        state = world.state
        schedule = self.schedule
        checkpoint = None
        if world.stored is None or now >= world.checkpoint_due_at:
            # Serialized once: the stored JSON and its hash come from the same bytes.
            state_json = canonical_json(state)
            checkpoint = Checkpoint(
                state.tick, state_json.decode(), hashlib.sha256(state_json).hexdigest()
            )
            world.checkpoint_due_at = now + checkpoint_interval(
                state.world_id, self.checkpoint_seconds
            )
        slot = schedule.slot(state.world_id) if schedule is not None else None
        return WorldHead(
            world_id=state.world_id,
            base_version=world.stored.version if world.stored is not None else 0,
            head_version=state.version,
            active=slot is not None,
            last_activity_at=_at(slot.last_activity_at) if slot is not None else None,
            next_tick_at=_at(slot.next_tick_at) if slot is not None else None,
            checkpoint=checkpoint,
        )

    async def flush(self) -> None:
        """Write everything applied so far in one transaction, then publish what changed;
        returns once both are done."""
        await (await self._store_pending())

    async def _store_pending(self) -> asyncio.Future[None]:
        """Write everything applied so far in one transaction and queue its invalidations
        behind those of the writes before it. Returns once written, with what ends once they
        are published: the next write need not wait for Kafka's acknowledgements."""
        async with self._flush_lock:
            pending, self._pending = self._pending, _Pending()
            if pending.empty():
                return self._publishing or _completed()
            captured = {w: self.worlds[w].state for w in pending.dirty if w in self.worlds}
            batch = pending.batch
            now = self.clock()
            batch.heads = [self._head(self.worlds[w], now) for w in captured]
            while True:
                try:
                    await until_written(
                        "postgres.world", self.store.write, batch, retryable=RETRYABLE
                    )
                    SINK_BATCH_SIZE.labels(sink="postgres.world").observe(len(batch.rows))
                    break
                except WorldConflictError as conflict:
                    WORLD_CONFLICTS.inc(len(conflict.world_ids))
                    log.error("%s; dropping this worker's unsaved changes to them", conflict)
                    self._forget(conflict.world_ids)
                    for world_id in conflict.world_ids:
                        self._conflicted_at[world_id] = self._forgets
                    for world_id in conflict.world_ids:
                        captured.pop(world_id, None)
                    batch = batch.without(conflict.world_ids)
                except BaseException:
                    # Not retryable and not understood, or cancelled: memory is now ahead of
                    # PostgreSQL for these worlds, and writing later changes would leave a gap
                    # in their log. Forget them (they reload from PostgreSQL), have the input
                    # batch that applied their events apply them again, and let the caller fail.
                    lost = set(captured) | {r.world_id for r in batch.rows}
                    log.exception("world batch write failed; forgetting %d world(s)", len(lost))
                    self._forget(lost)
                    for world_id in lost:
                        self._conflicted_at[world_id] = self._forgets
                    raise
            written = _Written(self.clock(), batch, pending.tick_lags)
            checkpointed = {h.world_id for h in batch.heads if h.checkpoint is not None}
            for world_id, state in captured.items():
                owned = self.worlds.get(world_id)
                if owned is None:
                    continue
                owned.stored = state
                written.changed.append((owned, state, world_id in checkpointed))
            self._publishing = asyncio.ensure_future(
                self._announce_after(self._publishing, written)
            )
            return self._publishing

    async def _announce_after(
        self, previous: asyncio.Future[None] | None, written: _Written
    ) -> None:
        """Measure a write and publish its invalidations, after the writes before it published
        theirs: a world's invalidations leave in the order its writes were stored, each built
        against the state the one before it announced."""
        if previous is not None:
            await asyncio.wait([previous])  # how it ended is its own flush's to report
        observe_end_to_end(
            EVENTS_AGENT,
            "postgres.world",
            (r.occurred_at for r in written.batch.rows if r.source == "event"),
        )
        lag_of = {s: WORLD_TICK_LAG_SECONDS.labels(source=s) for s in ("timer", "topic")}
        for source, due_at in written.tick_lags:
            lag_of[source].observe(max(0.0, written.stored_at - due_at))
        invalidations: list[WorldInvalidation] = []
        when = datetime.fromtimestamp(written.stored_at, UTC)
        for owned, state, checkpointed in written.changed:
            invalidations.extend(invalidations_for(owned.announced, state, when, checkpointed))
            owned.announced = state
        if invalidations:
            await self.publish(invalidations)
