"""A clean stop is bounded and loses nothing: SIGTERM to a busy worker (worlds ticking, usage
streaming, invalidations flowing, slow provider calls in flight) ends it within 10 s without a
write after its pools closed, 20 times in a row, and the ledger and the worlds are exact
afterwards. With the broker gone,
SIGTERM still ends the worker within 30 s, and the outage does not flood its log."""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from agents.usage.flow import USAGE
from agents.usage.synthetic import SyntheticUsage, synthetic_usage
from devkit.harness import WorkerProcess, new_worker
from runtime.settings import kafka_bootstrap_servers
from schemas.events import AIRequest, WorldEvent
from schemas.examples import example
from tests.faults.conftest import FaultStack
from tests.integration.test_world import (
    applied_ids,
    assert_replay_matches,
    eventually,
    village,
    world_event,
)
from tests.integration.usage_pipeline import expected_cost, publish, wait_committed_past
from topics.catalog import USAGE_EVENTS
from topics.publisher import Publisher

pytestmark = [pytest.mark.integration, pytest.mark.once]

# Worlds tick every 0.2 s, as the shared worker's do.
WORKER_TEST_SETTINGS = {"SCRIBE_WORLD_TICK_SECONDS": "0.2", "SCRIBE_WORLD_IDLE_SECONDS": "3"}

ROUNDS = 20
LOAD_SECONDS = 1.0  # of load on a busy worker before its SIGTERM
STOP_LIMIT_S = 10.0
BROKERLESS_STOP_LIMIT_S = 30.0
OUTAGE_SECONDS = 30.0
OUTAGE_LINE_LIMIT = 100
# What a write after a pool or client closed leaves in the log (asyncpg, redis-py, the sinks'
# retry loop, asyncio).
AFTER_CLOSE = (
    "pool is closed",
    "pool is closing",
    "write failed",
    "Connection closed by server",
    "Event loop is closed",
)
PLACES = ["square", "tavern", "market", "temple", "farm", "forest", "mine", "harbor"]
# One AI request every 2 s that the provider simulator answers only after 12 s, longer than a
# stop may take: every SIGTERM finds calls in flight. The lanes abandon them, uncommitted, and
# they run again after the restart (all of them after the last one).
AI_REQUEST_EVERY = 20  # load rounds (of about 0.1 s)
SLOW_PROMPT = "[sim:slow=12000] Describe the harbour at dusk"


@dataclass
class Load:
    """World events and usage events published in the background; invalidations follow from
    the worlds' changes. Records what was published, for the exactness checks."""

    kafka_url: str
    run: str
    worlds: list[str]
    usage: list[SyntheticUsage] = field(default_factory=list)
    world_events: int = 0
    ai_requests: list[str] = field(default_factory=list)  # their user ids, one per request

    async def run_until(self, stop: asyncio.Event) -> None:
        rng = random.Random(self.run)
        usage = synthetic_usage(self.run, 10**9, users=50, seed=3)
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap_servers(self.kafka_url), acks="all", linger_ms=5
        )
        await producer.start()
        try:
            async with Publisher(kafka_bootstrap_servers(self.kafka_url)) as publisher:
                self.world_events += await publisher.publish_many([village(w) for w in self.worlds])
                rounds = 0
                while not stop.is_set():
                    if rounds % AI_REQUEST_EVERY == 0:
                        user = f"{self.run}-ai-{len(self.ai_requests)}"
                        await publisher.publish_many(
                            [example(AIRequest, user_id=user, prompt=SLOW_PROMPT)]
                        )
                        self.ai_requests.append(user)
                    rounds += 1
                    batch = [next(usage) for _ in range(20)]
                    sends = [
                        await producer.send(USAGE_EVENTS.name, item.value, key=item.key)
                        for item in batch
                    ]
                    await asyncio.gather(*sends)
                    self.usage.extend(batch)
                    self.world_events += await publisher.publish_many(
                        [self._world_event(rng) for _ in range(5)]
                    )
                    await asyncio.sleep(0.1)
        finally:
            await producer.stop()

    def _world_event(self, rng: random.Random) -> WorldEvent:
        world = rng.choice(self.worlds)
        npc, other = rng.sample([f"npc-{n}" for n in range(1, 9)], 2)
        return rng.choice(
            [
                world_event(world, "npc_moved", npc_id=npc, location_id=rng.choice(PLACES)),
                world_event(world, "memory_recorded", npc_id=npc, content=f"saw {other}"),
                world_event(
                    world,
                    "relationship_changed",
                    npc_id=npc,
                    other_npc_id=other,
                    delta=rng.randint(-20, 20),
                ),
            ]
        )


@dataclass(frozen=True)
class Stop:
    seconds: float  # from SIGTERM to exit (the limit plus the kill's wait when it hung)
    exit_code: int
    after_close: list[str]  # log lines of writes after a close

    def ok(self, limit: float) -> bool:
        return self.seconds <= limit and not self.after_close


async def busy(worker: WorkerProcess) -> None:
    """Until this start of the worker ticks worlds, counts usage and delivers invalidations
    (its consumer groups join a few seconds after it reports ready)."""

    async def counts() -> tuple[float, ...]:
        return await asyncio.to_thread(
            lambda: (
                worker.metric("scribe_world_ticks_total", source="timer"),
                worker.metric("scribe_usage_events_total"),
                worker.metric("scribe_messages_in_total", topic="cache.invalidations"),
            )
        )

    try:
        await eventually(counts, all, "ticks, usage and invalidations", 60)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{worker.log_tail(60)}") from None


def sigterm(worker: WorkerProcess, give_up_after: float) -> Stop:
    """SIGTERM; how long the worker took to exit (SIGKILL after `give_up_after`), and the lines
    of its log (this start's) that show a write after a close."""
    process = worker.process
    assert process is not None
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(give_up_after)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    seconds = time.monotonic() - started
    lines = this_start(worker)
    after_close = [line for line in lines if any(marker in line for marker in AFTER_CLOSE)]
    return Stop(seconds, process.returncode, after_close)


def this_start(worker: WorkerProcess) -> list[str]:
    with open(worker.log_path, "rb") as log:
        log.seek(worker.log_offset)
        return log.read().decode(errors="replace").splitlines()


def summary(seconds: list[float]) -> str:
    return (
        f"min {min(seconds):.2f} s, median {statistics.median(seconds):.2f} s, "
        f"max {max(seconds):.2f} s"
    )


@pytest.mark.timeout(1800)
async def test_sigterm_to_a_busy_worker_20_times_exits_in_time_and_loses_nothing(
    services: dict[str, str], state_dir: Path, kafka_url: str, db: asyncpg.Connection
) -> None:
    run = f"sd{uuid.uuid4().hex[:8]}"
    load = Load(kafka_url, run, [f"w-stop-{run}-{n}" for n in range(6)])
    worker = new_worker(services | WORKER_TEST_SETTINGS, state_dir / "shutdown-workers")
    stop_load = asyncio.Event()
    loading = asyncio.create_task(load.run_until(stop_load))
    stops: list[Stop] = []
    try:
        for round_ in range(1, ROUNDS + 1):
            await asyncio.to_thread(worker.start)
            await busy(worker)
            await asyncio.sleep(LOAD_SECONDS)
            assert not loading.done(), "the load stopped"
            stop = await asyncio.to_thread(sigterm, worker, STOP_LIMIT_S + 20)
            stops.append(stop)
            print(
                f"  round {round_}: exit {stop.exit_code} after {stop.seconds:.2f} s; "
                f"{len(stop.after_close)} write(s) after close",
                flush=True,
            )
        stop_load.set()
        await loading

        # The last restart: everything published is stored exactly once.
        await asyncio.to_thread(worker.start)
        # The last thousand again: their offsets are past everything published before.
        last = await publish(kafka_url, load.usage[-1000:])
        await wait_committed_past(
            kafka_url, USAGE.group_of(worker.app_id), last, timeout=120, log=worker.log_tail
        )
        row = await db.fetchrow(
            "SELECT count(*), count(DISTINCT event_id), sum(cost_usd) FROM usage_events "
            "WHERE user_id LIKE $1",
            f"{run}-u%",
        )
        assert row is not None
        expected = sum((expected_cost(item.fields) for item in load.usage), Decimal(0))
        distinct = len({item.fields["event_id"] for item in load.usage})
        assert tuple(row) == (distinct, distinct, expected), "the usage ledger is not exact"
        await eventually(
            lambda: applied_ids(db, load.worlds),
            lambda n: n == load.world_events,
            f"all {load.world_events} world events applied",
            60,
        )
        logged = await db.fetchval(
            "SELECT count(*) FROM world_events WHERE world_id = ANY($1::text[]) "
            "AND source = 'event'",
            load.worlds,
        )
        assert logged == load.world_events, "a world event was applied twice or not at all"
        # Every AI request was answered, and its usage stored once (calls abandoned at a stop
        # ran after a restart).
        asked = len(load.ai_requests)
        await eventually(
            lambda: db.fetchrow(
                "SELECT count(*), count(DISTINCT event_id), count(DISTINCT user_id) "
                "FROM usage_events WHERE user_id LIKE $1",
                f"{run}-ai-%",
            ),
            lambda row: row is not None and tuple(row) == (asked, asked, asked),
            f"the usage of all {asked} AI requests stored once",
            120,
        )
        final = await asyncio.to_thread(sigterm, worker, STOP_LIMIT_S + 20)
        assert final.ok(STOP_LIMIT_S), final
        assert_replay_matches(services, *load.worlds)
        print(
            f"  {distinct:,} usage events ({expected} USD), {load.world_events:,} world "
            f"events and the usage of {len(load.ai_requests)} slow AI requests stored exactly "
            f"once; replay matches {len(load.worlds)} worlds",
            flush=True,
        )
    finally:
        stop_load.set()
        await asyncio.wait_for(loading, 30)
        worker.stop()
    times = [stop.seconds for stop in stops]
    print(f"  exit after SIGTERM over {len(stops)} rounds: {summary(times)}", flush=True)
    failed = {n: s for n, s in enumerate(stops, start=1) if not s.ok(STOP_LIMIT_S)}
    assert not failed, "\n".join(
        f"round {n}: {s.seconds:.1f} s, exit {s.exit_code}, {s.after_close[:3]}"
        for n, s in failed.items()
    )
    assert all(stop.exit_code == 0 for stop in stops), [stop.exit_code for stop in stops]


@pytest.fixture
def own_stack(state_dir: Path) -> Iterator[FaultStack]:
    """Servers of this test's own: it stops the broker, which the session's stack must keep."""
    with FaultStack.running(state_dir / f"shutdown-stack-{uuid.uuid4().hex[:6]}") as stack:
        yield stack


@pytest.mark.timeout(300)
async def test_without_the_broker_sigterm_ends_the_worker_and_the_log_stays_short(
    own_stack: FaultStack, state_dir: Path
) -> None:
    env = own_stack.env() | WORKER_TEST_SETTINGS
    run = f"sb{uuid.uuid4().hex[:8]}"
    load = Load(env["SCRIBE_KAFKA_URL"], run, [f"w-outage-{run}-{n}" for n in range(4)])
    worker = new_worker(env, state_dir / "shutdown-workers").start()
    try:
        stop_load = asyncio.Event()
        loading = asyncio.create_task(load.run_until(stop_load))
        await busy(worker)
        await asyncio.sleep(LOAD_SECONDS)
        stop_load.set()
        await loading
        (broker,) = [s for s in own_stack.services if s.env_var == "SCRIBE_KAFKA_URL"]
        before = len(this_start(worker))
        own_stack.stop(broker)
        await asyncio.sleep(OUTAGE_SECONDS)
        outage_lines = this_start(worker)[before:]
        assert worker.alive(), worker.log_tail()
        stop = await asyncio.to_thread(sigterm, worker, BROKERLESS_STOP_LIMIT_S + 30)
    finally:
        worker.stop()
    print(
        f"  {len(outage_lines)} log lines in a {OUTAGE_SECONDS:.0f} s broker outage; exit "
        f"{stop.exit_code} {stop.seconds:.2f} s after SIGTERM",
        flush=True,
    )
    assert len(outage_lines) < OUTAGE_LINE_LIMIT, "\n".join(outage_lines[:60])
    assert stop.seconds <= BROKERLESS_STOP_LIMIT_S, worker.log_tail(60)
