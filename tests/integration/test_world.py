"""The world flow on the embedded stack, through a real worker: replay matches the live state
(also after a SIGKILL mid-stream and a restart), idle worlds stop ticking and resume on their
next event, and events sent twice change nothing.

The shared worker ticks every 0.2 s and idles a world after 3 s (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import orjson
import pytest

from devkit.harness import WorkerProcess, read_until
from schemas import encode
from schemas.events import WorldEvent
from tests.faults.observe import committed_offset
from topics.publisher import Publisher

pytestmark = pytest.mark.integration
T = TypeVar("T")


def world_event(world_id: str, type_: str, **payload: Any) -> WorldEvent:
    return WorldEvent.model_validate(
        {
            "event_id": f"ev-{uuid.uuid4().hex[:12]}",
            "world_id": world_id,
            "type": type_,
            "payload": payload,
            "occurred_at": datetime.now(UTC),
        }
    )


def village(world_id: str) -> WorldEvent:
    return world_event(
        world_id,
        "world_loaded",
        template="village",
        image_base_url=f"https://cdn.scribe.invalid/worlds/{world_id}",
    )


async def eventually(
    probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str, timeout: float = 30
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last seen: {value!r}")
        await asyncio.sleep(0.1)


async def world_row(db: asyncpg.Connection, world_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT version, tick, state_hash, head_version, active FROM world_state "
        "WHERE world_id = $1",
        world_id,
    )


async def applied_ids(db: asyncpg.Connection, world_ids: list[str]) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM world_event_ids WHERE world_id = ANY($1::text[])", world_ids
    )
    return count


async def unapplied_report(
    db: asyncpg.Connection, kafka_url: str, worker: WorkerProcess, worlds: list[str], marker: str
) -> str:
    """Where the events not applied sit in world.events, and what the group committed: was
    an offset committed past them, or did consumption stop before them?"""
    applied = {
        row["event_id"]
        for row in await db.fetch(
            "SELECT event_id FROM world_event_ids WHERE world_id = ANY($1::text[])", worlds
        )
    }
    records = await read_until(
        kafka_url,
        "world.events",
        done=lambda _: False,
        match=lambda r: r.value is not None and marker.encode() in r.value,
        timeout=8,
    )
    unapplied = [
        (r.partition, r.offset)
        for r in records
        if r.value is not None and orjson.loads(r.value)["event_id"] not in applied
    ]
    committed = {
        partition: await committed_offset(kafka_url, worker.app_id, "world.events", partition)
        for partition in sorted({r.partition for r in records})
    }
    return f"unapplied (partition, offset): {unapplied}; committed: {committed}"


def replay(services: dict[str, str], *world_ids: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scribe", "world", "replay", *world_ids],
        env={**os.environ, **services},
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_replay_matches(services: dict[str, str], *world_ids: str) -> None:
    result = replay(services, *world_ids)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(world_ids) and all(line.startswith("match") for line in lines)


async def test_world_events_sent_twice_change_nothing(
    publisher: Publisher,
    db: asyncpg.Connection,
    kafka_url: str,
    services: dict[str, str],
    worker: WorkerProcess,
) -> None:
    w = f"w-dup-{uuid.uuid4().hex[:8]}"
    versioned = world_event(w, "faction_changed", faction_id="guild", join=["npc-3"])
    versioned = versioned.model_copy(update={"version": 5})
    events = [
        village(w),
        world_event(w, "npc_moved", npc_id="npc-1", location_id="tavern"),
        world_event(w, "memory_recorded", npc_id="npc-2", content="The harvest festival."),
        world_event(w, "relationship_changed", npc_id="npc-1", other_npc_id="npc-2", delta=30),
        world_event(w, "item_created", item_id="lute", name="Old Lute", owner_id="npc-1"),
        versioned,
        # More events than the world remembers ids of (64): the first ones' duplicates must
        # be recognised from world_event_ids, not from the state.
        *(world_event(w, "memory_recorded", content=f"filler {n}") for n in range(70)),
    ]
    await publisher.publish_many(events)
    await eventually(lambda: applied_ids(db, [w]), lambda n: n == len(events), "all applied")
    # Wait until the world idles, so no tick moves it while the duplicates arrive.
    before = await eventually(
        lambda: world_row(db, w), lambda r: r is not None and not r["active"], "idle", 20
    )
    assert before is not None
    rows_before = await db.fetchval("SELECT count(*) FROM world_events WHERE world_id = $1", w)

    older_version = world_event(w, "npc_moved", npc_id="npc-4", location_id="mine")
    older_version = older_version.model_copy(update={"version": 4})
    # An unknown type breaks the contract, so only raw bytes carry it; it is sent after the
    # duplicates, on the same partition.
    unknown_id = f"ev-{uuid.uuid4().hex[:12]}"
    unknown = orjson.dumps(
        {**orjson.loads(encode(world_event(w, "world_unloaded"))), "event_id": unknown_id}
        | {"type": "dragon_summoned"}
    )
    await publisher.publish_many([*events, older_version])
    await publisher.publish_raw([("world.events", w.encode(), unknown)])
    dead = await read_until(
        kafka_url,
        "world.events.dlq",
        done=lambda kept: len(kept) >= 1,
        match=lambda r: r.value is not None and unknown_id.encode() in r.value,
    )
    assert dead, worker.log_tail()
    assert dead[0].headers["scribe-error-kind"] == b"schema"
    assert b"dragon_summoned" in dead[0].headers["scribe-error"]

    after = await world_row(db, w)
    assert after == before
    assert (
        await db.fetchval("SELECT count(*) FROM world_events WHERE world_id = $1", w) == rows_before
    )
    assert await applied_ids(db, [w]) == len(events)
    assert await db.fetchval("SELECT count(*) FROM memories WHERE world_id = $1", w) == 71
    assert_replay_matches(services, w)


async def test_an_idle_world_stops_ticking_and_resumes_on_its_next_event(
    publisher: Publisher, db: asyncpg.Connection, services: dict[str, str], worker: WorkerProcess
) -> None:
    w = f"w-idle-{uuid.uuid4().hex[:8]}"
    await publisher.publish(village(w))
    await eventually(
        lambda: world_row(db, w), lambda r: r is not None and r["head_version"] > 1, "ticks"
    )
    idle = await eventually(
        lambda: world_row(db, w), lambda r: r is not None and not r["active"], "idle", 20
    )
    assert idle is not None
    await asyncio.sleep(1.5)  # seven tick intervals
    assert await world_row(db, w) == idle, "an idle world ticked"

    await publisher.publish(world_event(w, "npc_moved", npc_id="npc-5", location_id="square"))
    await eventually(
        lambda: world_row(db, w),
        lambda r: r is not None and r["active"] and r["head_version"] > idle["head_version"] + 1,
        "ticking again",
    )
    # The idle time is not simulated after the fact: the world resumed where it stopped.
    latest_tick = await db.fetchval("SELECT max(tick) FROM world_events WHERE world_id = $1", w)
    assert idle["tick"] < latest_tick < idle["tick"] + 15
    assert_replay_matches(services, w)


async def test_replay_matches_every_world_after_sigkill_mid_stream_and_restart(
    publisher: Publisher,
    db: asyncpg.Connection,
    services: dict[str, str],
    worker: WorkerProcess,
) -> None:
    marker = uuid.uuid4().hex[:8]
    worlds = [f"w-kill-{marker}-{n}" for n in range(6)]
    await publisher.publish_many([village(w) for w in worlds])
    rng = random.Random(marker)
    published = len(worlds)
    places = ["square", "tavern", "market", "temple", "farm", "forest", "mine", "harbor"]

    async def player_stream(seconds: float) -> None:
        nonlocal published
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            batch = []
            for _ in range(10):
                w = rng.choice(worlds)
                npc, other = rng.sample([f"npc-{n}" for n in range(1, 9)], 2)
                batch.append(
                    rng.choice(
                        [
                            world_event(w, "npc_moved", npc_id=npc, location_id=rng.choice(places)),
                            world_event(w, "memory_recorded", npc_id=npc, content=f"saw {other}"),
                            world_event(
                                w,
                                "relationship_changed",
                                npc_id=npc,
                                other_npc_id=other,
                                delta=rng.randint(-20, 20),
                            ),
                        ]
                    )
                )
            published += await publisher.publish_many(batch)
            await asyncio.sleep(0.05)

    async def logged_after_checkpoint() -> int:
        behind: int = await db.fetchval(
            "SELECT count(*) FROM world_state WHERE world_id = ANY($1::text[]) "
            "AND head_version > version",
            worlds,
        )
        return behind

    stream = asyncio.create_task(player_stream(seconds=8))
    # Kill once inputs are logged after the worlds' checkpoints, so the restarted worker must
    # replay a log tail to load them.
    await eventually(logged_after_checkpoint, lambda n: n > 0, "inputs after checkpoints")
    worker.kill()
    assert not stream.done(), "the kill did not land mid-stream"
    worker.log_path.rename(worker.log_path.with_suffix(f".killed-{marker}.log"))
    await asyncio.sleep(1)
    await asyncio.to_thread(worker.start)  # the stream keeps publishing meanwhile
    await stream

    try:
        await eventually(
            lambda: applied_ids(db, worlds),
            lambda n: n == published,
            f"all {published} events applied",
            90,
        )
    except AssertionError as error:
        unapplied = await unapplied_report(db, services["SCRIBE_KAFKA_URL"], worker, worlds, marker)
        raise AssertionError(
            f"{error}\n{unapplied}\nthe restarted worker's log:\n{worker.log_tail(80)}"
        ) from None
    inputs = await db.fetchval(
        "SELECT count(*) FROM world_events WHERE world_id = ANY($1::text[]) AND source = 'event'",
        worlds,
    )
    assert inputs == published, "an event was applied twice or not at all"
    assert_replay_matches(services, *worlds)


async def test_changes_are_announced_on_cache_invalidations(
    publisher: Publisher, kafka_url: str, worker: WorkerProcess
) -> None:
    w = f"w-cache-{uuid.uuid4().hex[:8]}"
    await publisher.publish(village(w))
    records = await read_until(
        kafka_url,
        "cache.invalidations",
        done=lambda kept: len(kept) >= 1,
        # A write's invalidations go as one message per partition, keyed by its first world.
        match=lambda r: f'"world:{w}"'.encode() in (r.value or b""),
    )
    assert records, worker.log_tail()
    first = orjson.loads(records[0].value or b"{}")
    assert f"world:{w}" in first["keys"]
    assert f"world:{w}:npc:npc-1" in first["keys"]
    assert first.get("urls", []) == []  # a new world's images had no URL to purge before
