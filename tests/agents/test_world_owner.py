"""The world owner against real PostgreSQL and Kafka, driven directly (no Faust worker) with
a clock the test moves: tick scheduling, ticks from producers, and two owners of one world."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import REGISTRY

from agents.intake import Received
from agents.world.flow import send_invalidations
from agents.world.history import rebuild_from_log
from agents.world.invalidation import WorldInvalidation
from agents.world.model import state_hash
from agents.world.owner import (
    MAX_TICK_JUMP,
    Publish,
    WorldOwner,
    _payload_json,
    checkpoint_interval,
    partition_for,
)
from devkit.harness import read_until
from runtime.settings import kafka_bootstrap_servers
from schemas import encode
from schemas.events import CacheInvalidation, Event, WorldEvent, WorldTick
from sinks.postgres.migrate import migrate
from sinks.postgres.world import WorldStore
from tests.agents.world_fixtures import village_loaded, world_event
from topics.dlq import DeadLetters, Origin
from topics.publisher import Publisher


def overdue_gauge() -> float | None:
    return REGISTRY.get_sample_value("scribe_world_tick_overdue_seconds")


def test_partition_for_agrees_with_the_producers_partitioner() -> None:
    for number in range(200):
        key = f"world-{number}"
        expected = DefaultPartitioner()(key.encode(), list(range(6)), list(range(6)))
        assert partition_for(key, 6) == expected


def test_payloads_are_stored_with_exact_numbers() -> None:
    assert _payload_json({"a": Decimal("1.10"), "b": [1, "x"]}) == '{"a":1.10,"b":[1,"x"]}'


def test_checkpoints_are_spread_between_one_and_two_intervals() -> None:
    intervals = {checkpoint_interval(f"w-{n}", 10.0) for n in range(100)}
    assert len(intervals) > 50
    assert all(10.0 <= i < 20.0 for i in intervals)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class _Producer:
    """Faust's producer call shape over a real aiokafka producer, for `DeadLetters`."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def send_and_wait(
        self, topic: str, key: bytes | None, value: bytes | None, **options: Any
    ) -> Any:
        return await self.producer.send_and_wait(
            topic, value, key=key, headers=options.get("headers")
        )


@pytest.fixture
async def kafka_producer(kafka_url: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers(kafka_url))
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)
    created = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        yield created
    finally:
        await created.close()


def owner(
    pool: asyncpg.Pool,
    publisher: Publisher,
    producer: AIOKafkaProducer,
    clock: Clock,
    *,
    tick_seconds: float = 1.0,
    idle_seconds: float = 20.0,
    publish: Publish | None = None,
) -> WorldOwner:
    async def publish_all(invalidations: list[WorldInvalidation]) -> None:
        await publisher.publish_many([i.message() for i in invalidations])

    dead_letters = DeadLetters(SimpleNamespace(producer=_Producer(producer)))
    return WorldOwner(
        WorldStore(pool),
        publish or publish_all,
        dead_letters,
        tick_seconds=tick_seconds,
        idle_seconds=idle_seconds,
        catch_up=3,
        clock=clock,
    )


async def load_villages(worlds: WorldOwner, clock: Clock, count: int) -> list[str]:
    """`count` new village worlds loaded into `worlds`; their ids."""
    ids = [f"w-owner-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    await worlds.apply_events([received(happening(clock, village_loaded(w))) for w in ids])
    return ids


async def villages_with_a_tick_due(
    pool: asyncpg.Pool,
    publisher: Publisher,
    producer: AIOKafkaProducer,
    count: int,
    publish: Publish | None = None,
) -> tuple[WorldOwner, list[str]]:
    """An owner with `count` new villages loaded, one tick interval later: a tick due in each."""
    clock = Clock()
    worlds = owner(pool, publisher, producer, clock, publish=publish)
    ids = await load_villages(worlds, clock, count)
    clock.now += 1.0
    return worlds, ids


def received(event: Event, topic: str = "world.events") -> Received[Any]:
    key = str(event.world_id).encode()  # type: ignore[attr-defined]
    return Received(event, Origin(topic, 0, 0, key, encode(event)))


def move(clock: Clock, world_id: str, npc_id: str, place: str) -> list[Received[Any]]:
    event = world_event(world_id, "npc_moved", npc_id=npc_id, location_id=place)
    return [received(happening(clock, event))]


def happening(clock: Clock, event: WorldEvent) -> WorldEvent:
    """`event` as if a player did it at the clock's time (activity counts from event time)."""
    return event.model_copy(update={"occurred_at": datetime.fromtimestamp(clock.now, UTC)})


async def stored_inputs(pool: asyncpg.Pool, world_id: str) -> list[tuple[str, int]]:
    rows = await pool.fetch(
        "SELECT source, tick FROM world_events WHERE world_id = $1 AND ordinal = 0 ORDER BY seq",
        world_id,
    )
    return [(row["source"], row["tick"]) for row in rows]


async def replays_to_head(pool: asyncpg.Pool, world: WorldOwner, world_id: str) -> bool:
    head = world.worlds[world_id].state
    async with pool.acquire() as conn:
        rebuilt = await rebuild_from_log(conn, world_id, head.version)
    return state_hash(rebuilt) == state_hash(head)


@pytest.mark.integration
async def test_timer_ticks_catch_up_in_bounded_steps_then_idle_then_resume(
    pool: asyncpg.Pool,
    publisher: Publisher,
    kafka_producer: AIOKafkaProducer,
) -> None:
    clock = Clock()
    worlds = owner(pool, publisher, kafka_producer, clock)
    w = f"w-owner-{uuid.uuid4().hex[:8]}"
    await worlds.apply_events([received(happening(clock, village_loaded(w)))])
    clock.now += 10.0  # ten intervals due: caught up three per round, none skipped
    for expected in (3, 6, 9, 10, 10):
        await worlds.tick_due()
        assert worlds.worlds[w].state.tick == expected
    clock.now += 20.0  # the world goes idle 20 s after its last event
    for _ in range(4):
        await worlds.tick_due()
    assert worlds.worlds[w].state.tick == 19
    assert worlds.schedule is not None and w not in worlds.schedule
    row = await pool.fetchrow(
        "SELECT active, version, head_version FROM world_state WHERE world_id = $1", w
    )
    assert row is not None
    assert not row["active"] and row["version"] == row["head_version"]  # checkpointed

    clock.now += 100.0
    await worlds.tick_due()
    assert worlds.worlds[w].state.tick == 19  # idle worlds cost nothing
    await worlds.apply_events(move(clock, w, "npc-1", "farm"))
    clock.now += 1.0
    await worlds.tick_due()
    assert worlds.worlds[w].state.tick == 20  # resumed, without simulating the idle time
    inputs = [source for source, _ in await stored_inputs(pool, w)]
    assert inputs == ["event", *["tick"] * 19, "event", "tick"]
    assert await replays_to_head(pool, worlds, w)


@pytest.fixture
def rounds_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timer rounds of at most two ticks, each full one followed at once by the next."""
    monkeypatch.setattr("agents.world.owner.ROUND_BUDGET", 2)
    monkeypatch.setattr("agents.world.owner.FOLLOW_ROUNDS_OF", 2)


@pytest.mark.integration
@pytest.mark.usefixtures("rounds_of_two")
async def test_a_full_round_is_followed_at_once_by_the_next(
    pool: asyncpg.Pool, publisher: Publisher, kafka_producer: AIOKafkaProducer
) -> None:
    # One tick due per world: rounds of 2, 2 and 1 in one timer call.
    worlds, ids = await villages_with_a_tick_due(pool, publisher, kafka_producer, 5)
    await worlds.tick_due()
    assert [worlds.worlds[w].state.tick for w in ids] == [1] * 5
    for w in ids:
        assert await replays_to_head(pool, worlds, w)


def _timer_seconds(phase: str) -> float:
    return REGISTRY.get_sample_value("scribe_world_timer_seconds_total", {"phase": phase}) or 0.0


@pytest.mark.integration
@pytest.mark.usefixtures("rounds_of_two")
async def test_the_timer_counts_its_time_applying_waiting_for_writes_and_draining(
    pool: asyncpg.Pool, publisher: Publisher, kafka_producer: AIOKafkaProducer
) -> None:
    phases = ("apply", "wait_write", "drain")
    # Rounds of 2, 2 and 1 in one call: the second ends with the first's write in flight (a
    # round of two never yields) and goes in one write with the third, which waits for it.
    worlds, _ = await villages_with_a_tick_due(pool, publisher, kafka_producer, 5)
    before = {phase: _timer_seconds(phase) for phase in phases}
    started = time.monotonic()
    await worlds.tick_due()
    wall = time.monotonic() - started
    spent = {phase: _timer_seconds(phase) - before[phase] for phase in phases}
    assert all(seconds > 0 for seconds in spent.values()), spent
    assert sum(spent.values()) <= wall


@pytest.mark.integration
async def test_a_round_under_the_follow_size_ends_the_timers_call(
    pool: asyncpg.Pool,
    publisher: Publisher,
    kafka_producer: AIOKafkaProducer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lightly loaded worker lets ticks gather for the timer's interval rather than writing
    every few ticks as they fall due."""
    monkeypatch.setattr("agents.world.owner.ROUND_BUDGET", 2)
    monkeypatch.setattr("agents.world.owner.FOLLOW_ROUNDS_OF", 3)
    # One tick due per world; the first round takes 2, fewer than 3.
    worlds, ids = await villages_with_a_tick_due(pool, publisher, kafka_producer, 5)
    await worlds.tick_due()
    assert sorted(worlds.worlds[w].state.tick for w in ids) == [0, 0, 0, 1, 1]
    await worlds.tick_due()
    await worlds.tick_due()
    assert [worlds.worlds[w].state.tick for w in ids] == [1] * 5


class HeldPublisher:
    """Records what each write publishes (its worlds' versions); while `held`, a call waits
    for `released`, as one waiting for Kafka's acknowledgements would."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.held = False
        self.holding = asyncio.Event()
        self.released = asyncio.Event()

    async def __call__(self, invalidations: list[WorldInvalidation]) -> None:
        self.calls.append([int(i.reason.rsplit(" ", 1)[1].rstrip(")")) for i in invalidations])
        if self.held:
            self.holding.set()
            await self.released.wait()


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.05)


@pytest.mark.integration
async def test_a_write_does_not_wait_for_the_invalidations_before_it_which_leave_in_order(
    pool: asyncpg.Pool, publisher: Publisher, kafka_producer: AIOKafkaProducer
) -> None:
    clock = Clock()
    publish = HeldPublisher()
    worlds = owner(pool, publisher, kafka_producer, clock, tick_seconds=0, publish=publish)
    [w] = await load_villages(worlds, clock, 1)
    publish.held = True
    first = asyncio.create_task(worlds.apply_events(move(clock, w, "npc-1", "farm")))
    await asyncio.wait_for(publish.holding.wait(), 10)  # stored; its publish held
    second = asyncio.create_task(worlds.apply_events(move(clock, w, "npc-2", "mine")))
    # The second write is stored while the first's invalidations still wait ...
    await eventually(lambda: _stored_events(pool, w, 3))
    # ... and its own wait for them: neither batch is done, nothing overtook.
    assert publish.calls == [[1], [2]]
    assert not first.done() and not second.done()
    publish.released.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert publish.calls == [[1], [2], [3]]


@pytest.mark.integration
@pytest.mark.usefixtures("rounds_of_two")
async def test_the_timers_next_round_is_stored_while_the_last_ones_invalidations_wait(
    pool: asyncpg.Pool, publisher: Publisher, kafka_producer: AIOKafkaProducer
) -> None:
    publish = HeldPublisher()
    # Rounds of 2, 2 and 1 in one call. The second ends while the first is being written (a
    # round of two never yields), so it waits for the third and both go in one write.
    worlds, ids = await villages_with_a_tick_due(
        pool, publisher, kafka_producer, 5, publish=publish
    )
    publish.held = True
    timer = asyncio.create_task(worlds.tick_due())
    await eventually(lambda: _ticks_stored(pool, ids, 5))
    assert publish.calls == [[1] * 5, [2, 2]]  # the load's, then the first round's, held
    assert not timer.done()  # the call returns once every round's invalidations are out
    publish.released.set()
    await asyncio.wait_for(timer, 10)
    assert publish.calls == [[1] * 5, [2, 2], [2, 2, 2]]


async def _stored_events(pool: asyncpg.Pool, world_id: str, count: int) -> bool:
    return len(await stored_inputs(pool, world_id)) == count


async def _ticks_stored(pool: asyncpg.Pool, world_ids: list[str], count: int) -> bool:
    stored = await pool.fetchval(
        "SELECT count(*) FROM world_events WHERE world_id = ANY($1) AND source = 'tick'",
        world_ids,
    )
    return bool(stored == count)


@pytest.mark.integration
async def test_a_worker_behind_its_ticks_shows_how_far_and_warns_once(
    pool: asyncpg.Pool,
    publisher: Publisher,
    kafka_producer: AIOKafkaProducer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    worlds = owner(pool, publisher, kafka_producer, clock, idle_seconds=3600.0)
    w = f"w-owner-{uuid.uuid4().hex[:8]}"
    await worlds.apply_events([received(happening(clock, village_loaded(w)))])
    clock.now += 1.0
    await worlds.tick_due()
    assert overdue_gauge() == 0.0  # its one due tick applied

    clock.now += 60.0  # due: the ticks of 2 s to 61 s after the world loaded, three per round
    with caplog.at_level(logging.WARNING, logger="agents.world.owner"):
        await worlds.tick_due()
        await worlds.tick_due()
    assert overdue_gauge() == 53.0  # the oldest tick left is the one of 8 s
    warnings = [r for r in caplog.records if "cannot keep up" in r.getMessage()]
    assert len(warnings) == 1, "warned once, not on every round"
    assert "56.0 s overdue" in warnings[0].getMessage()  # after the first round


@pytest.mark.integration
async def test_ticks_from_producers_advance_to_the_tick_and_refuse_what_they_cannot(
    pool: asyncpg.Pool,
    publisher: Publisher,
    kafka_producer: AIOKafkaProducer,
    kafka_url: str,
) -> None:
    clock = Clock()
    worlds = owner(pool, publisher, kafka_producer, clock, tick_seconds=0)
    w = f"w-topic-{uuid.uuid4().hex[:8]}"
    await worlds.apply_events([received(happening(clock, village_loaded(w)))])

    def tick(world_id: str, number: int) -> Received[WorldTick]:
        message = WorldTick.model_validate(
            {"world_id": world_id, "tick": number, "occurred_at": "2026-03-01T00:00:00Z"}
        )
        return received(message, "world.ticks")

    ghost = f"w-ghost-{uuid.uuid4().hex[:8]}"
    await worlds.apply_ticks(
        [tick(w, 5), tick(w, 3), tick(w, 5 + MAX_TICK_JUMP + 1), tick(ghost, 1)]
    )
    assert worlds.worlds[w].state.tick == 5
    assert [t for _, t in await stored_inputs(pool, w)] == [0, 1, 2, 3, 4, 5]
    dead = await read_until(
        kafka_url,
        "world.ticks.dlq",
        done=lambda kept: len(kept) >= 2,
        match=lambda r: r.key in (w.encode(), ghost.encode()),
    )
    kinds = {r.key: r.headers["scribe-error-kind"] for r in dead}
    assert kinds == {w.encode(): b"tick_gap", ghost.encode(): b"unknown_world"}
    assert await replays_to_head(pool, worlds, w)


@pytest.mark.integration
async def test_two_owners_of_one_world_never_interleave_its_log_nor_lose_an_event(
    pool: asyncpg.Pool,
    publisher: Publisher,
    kafka_producer: AIOKafkaProducer,
    kafka_url: str,
) -> None:
    clock = Clock()
    first = owner(pool, publisher, kafka_producer, clock, tick_seconds=0)
    second = owner(pool, publisher, kafka_producer, clock, tick_seconds=0)
    w = f"w-split-{uuid.uuid4().hex[:8]}"
    await first.apply_events([received(happening(clock, village_loaded(w)))])
    await second.apply_events(move(clock, w, "npc-1", "farm"))
    # `first` still believes it holds the head: its write is refused, it lets go of its copy
    # and applies the event again on the world as stored (the batch is acknowledged after).
    await first.apply_events(move(clock, w, "npc-2", "mine"))
    assert first.worlds[w].state.version == 3
    await second.apply_events(move(clock, w, "npc-3", "tavern"))
    assert [s for s, _ in await stored_inputs(pool, w)] == ["event"] * 4  # none lost, none twice
    assert await replays_to_head(pool, second, w)
    state = second.worlds[w].state
    assert state.npcs["npc-1"].location_id == "farm"
    assert state.npcs["npc-2"].location_id == "mine"

    announced = await read_until(
        kafka_url,
        "cache.invalidations",
        done=lambda kept: len(kept) >= 3,
        match=lambda r: r.key == f"world:{w}".encode(),
    )
    keys = [orjson.loads(r.value or b"{}")["keys"] for r in announced]
    assert [f"world:{w}", f"world:{w}:npc:npc-1"] in keys


@pytest.mark.integration
async def test_a_stored_world_that_cannot_be_rebuilt_is_dead_lettered_not_guessed(
    pool: asyncpg.Pool,
    publisher: Publisher,
    kafka_producer: AIOKafkaProducer,
    kafka_url: str,
) -> None:
    clock = Clock()
    worlds = owner(pool, publisher, kafka_producer, clock, tick_seconds=0)
    w = f"w-broken-{uuid.uuid4().hex[:8]}"
    # A row in the shape that no world flow wrote: no log behind its version 3.
    await pool.execute(
        "INSERT INTO world_state (world_id, version, tick, state, state_hash) "
        "VALUES ($1, 3, 120, '{\"weather\": \"rain\"}', 'h-1')",
        w,
    )
    await worlds.apply_events([received(happening(clock, world_event(w, "world_unloaded")))])
    assert w not in worlds.worlds
    dead = await read_until(
        kafka_url,
        "world.events.dlq",
        done=lambda kept: len(kept) >= 1,
        match=lambda r: r.key == w.encode(),
    )
    assert dead[0].headers["scribe-error-kind"] == b"world_unavailable"
    assert b"its log reaches version 0 but its head is 3" in dead[0].headers["scribe-error"]
    assert await pool.fetchval("SELECT version FROM world_state WHERE world_id = $1", w) == 3


@pytest.mark.integration
async def test_a_write_cancelled_at_shutdown_leaves_no_stored_head_ahead_of_its_log(
    pool: asyncpg.Pool,
    publisher: Publisher,
    kafka_producer: AIOKafkaProducer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    worlds = owner(pool, publisher, kafka_producer, clock, tick_seconds=0)
    w = f"w-cancel-{uuid.uuid4().hex[:8]}"
    await worlds.apply_events([received(happening(clock, village_loaded(w)))])
    moved = move(clock, w, "npc-1", "farm")

    writing = asyncio.Event()

    async def write_never_returns(batch: Any) -> None:
        writing.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(worlds.store, "write", write_never_returns)
    applying = asyncio.create_task(worlds.apply_events(moved))
    await writing.wait()
    applying.cancel()  # the consumer's batch abandoned when the worker stops
    with pytest.raises(asyncio.CancelledError):
        await applying
    monkeypatch.undo()
    await worlds.revoked({0})  # what stopping does next: checkpoint what the worker owns

    # The batch was not committed: the next owner reads it again.
    successor = owner(pool, publisher, kafka_producer, clock, tick_seconds=0)
    await successor.apply_events(moved)
    assert [s for s, _ in await stored_inputs(pool, w)] == ["event", "event"]
    assert await replays_to_head(pool, successor, w)
    assert successor.worlds[w].state.npcs["npc-1"].location_id == "farm"


def round_of_invalidations(run: str) -> list[WorldInvalidation]:
    """A round's invalidations of 120 worlds, ~4 KB each: more than one produce batch per
    partition. Keys only: they stay on the session's cache.invalidations, where every later
    worker (a fresh group) reads them from the start, and a key costs it one Redis UNLINK
    where a URL costs a CDN call (Fastly purges one URL a call, 50 calls a second). With 50
    URLs each, those workers spent two minutes purging them and overran their stop deadline."""
    return [
        world_invalidation(
            f"w-send-{run}-{n}", [f"world:w-send-{run}-{n}:npc:npc-{k}" for k in range(100)]
        )
        for n in range(120)
    ]


def world_invalidation(world_id: str, keys: list[str]) -> WorldInvalidation:
    return WorldInvalidation(world_id, keys, [], [], [], 1, 2, datetime.now(UTC))


def test_the_batch_test_leaves_later_workers_nothing_to_purge_at_the_cdn() -> None:
    sent = round_of_invalidations("0123abcd")
    assert not any(i.urls or i.tags or i.patterns for i in sent)
    assert min(len(encode(i.message())) for i in sent) > 3_500


@pytest.mark.integration
async def test_a_rounds_invalidations_go_out_in_batches_keyed_and_partitioned_as_send(
    kafka_producer: AIOKafkaProducer, kafka_url: str
) -> None:
    run = uuid.uuid4().hex[:8]
    sent = round_of_invalidations(run)
    traceparent = ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    await send_invalidations(kafka_producer, sent, [traceparent])

    records = await read_until(
        kafka_url,
        "cache.invalidations",
        done=lambda kept: len(kept) >= len(sent),
        match=lambda r: (r.key or b"").startswith(f"world:w-send-{run}-".encode()),
    )
    assert sorted(r.value or b"" for r in records) == sorted(encode(i.message()) for i in sent)
    count = len(await kafka_producer.partitions_for("cache.invalidations"))
    assert count > 1
    partitioner = DefaultPartitioner()
    for record in records:
        assert record.partition == partitioner(record.key, list(range(count)), [])
        assert record.headers["traceparent"] == traceparent[1]
    assert len({r.partition for r in records}) > 1


@pytest.mark.integration
async def test_a_rounds_small_invalidations_go_out_as_one_message_per_partition(
    kafka_producer: AIOKafkaProducer, kafka_url: str
) -> None:
    run = uuid.uuid4().hex[:8]
    sent = [
        world_invalidation(
            f"w-merge-{run}-{n}",
            [f"world:w-merge-{run}-{n}", f"world:w-merge-{run}-{n}:npc:npc-1"],
        )
        for n in range(40)
    ]
    count = len(await kafka_producer.partitions_for("cache.invalidations"))
    partitioner = DefaultPartitioner()
    # 80 keys in all fit one message in each partition the worlds hash to.
    partitions = {partitioner(i.id.encode(), list(range(count)), []) for i in sent}
    messages = await send_invalidations(kafka_producer, sent, [])
    assert messages == len(partitions) < len(sent)

    records = await read_until(
        kafka_url,
        "cache.invalidations",
        done=lambda kept: len(kept) >= messages,
        match=lambda r: (r.key or b"").startswith(f"world:w-merge-{run}-".encode()),
    )
    assert len(records) == messages
    read_keys = set()
    for record in records:
        message = CacheInvalidation.model_validate_json(record.value or b"")
        assert record.partition == partitioner(record.key, list(range(count)), [])
        # Each world in a message is one its key's partition holds.
        for world in message.keys[::2]:
            assert partitioner(world.encode(), list(range(count)), []) == record.partition
        read_keys.update(message.keys)
    assert read_keys == {k for i in sent for k in i.keys}
