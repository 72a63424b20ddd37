"""Benchmark: N active worlds ticking at 1 Hz on one worker while player events arrive.

    .venv/bin/python bench/world_ticks.py --worlds 1000 --seconds 60 --events-per-second 100

Starts the embedded stack (or uses SCRIBE_*_URL; `--broker apache` puts a one-broker Apache
Kafka of its own beside the embedded PostgreSQL and Redis), one `scribe worker` (tick every second,
worlds never idle during the run), loads N village worlds (their first events spread over two
seconds, as players arrive), publishes player events to random worlds for the measured
window, then reads back from PostgreSQL:

- world ticks stored per second by the worker, against the required N x 1 Hz (ratio);
- the worker's CPU per tick against a baseline measured side by side: the pure `step` run in
  this process on the same kind of worlds (no Kafka, PostgreSQL or invalidations), so the
  ratio is what the pipeline costs on top of the simulation; and the same above what the
  worker spends idle, measured before any world is loaded (its flows' consumers polling:
  the embedded broker answers a waiting fetch only when its wait runs out, so there they poll
  every 20-100 ms);
- the CPU that PostgreSQL and the broker spent per tick over the same window, when they run
  on this machine (found by the port they listen on), and how busy the whole machine was;
- what the window's writes did to `world_state`: its updates, the share that were HOT (no
  index entries), its dead rows, the vacuums and its size before and after;
- tick lag: from the second a tick was due until its row was written, p50 / p99 / max, and
  its p50 / max in each five seconds of the window (a backlog left by a stall shows as a run
  of high slices that drains slowly);
- player events applied per second, and the worker's own tick-lag histogram (/metrics);
- the garbage collections that paused the worker over the window, and for how long in all
  (`scribe_gc_pause_seconds`): each held every flow on its event loop;
- the invalidations the world flow sent over the window, how many of them the invalidation
  flow read, and how far behind it was at the end (its CPU is in the worker's, or under
  `--apart` in the second worker's).

`--apart` runs the flows as docs/capacity.md deploys them at scale: the measured worker hosts
the world flow alone (`SCRIBE_WORKER_FLOWS=world`) and a second worker hosts the others (the
invalidation flows, cache warming, the router and usage). The second worker's CPU per tick is
reported beside the world worker's, like PostgreSQL's and the broker's.

A progress line is printed every five seconds; results go to bench/results/world_ticks-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import re
import sys
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from prometheus_client.samples import Sample

from agents.world.apply import Applied, apply_event
from agents.world.model import WorldState
from agents.world.step import step
from bench.brokers import BROKERS, stack_on
from bench.processes import (
    SERVERS,
    MachineCpu,
    ThreadWindow,
    server_pids,
    thread_time_text,
    tree_cpu_seconds,
)
from devkit.harness import WorkerProcess, metric_sum, new_worker, services_for_tests
from runtime.service import collector_thresholds
from runtime.settings import WORKER_FLOWS, kafka_bootstrap_servers
from schemas.events import WorldEvent
from topics.publisher import Publisher

RESULTS = Path(__file__).parent / "results"
# The window's tick lag is also reported per slice of this many seconds.
LAG_SLICE_S = 5
# `--apart`: the flows the second worker hosts (the world worker hosts `world` alone).
OTHER_FLOWS = tuple(flow for flow in WORKER_FLOWS if flow != "world")
PLACES = ("square", "tavern", "market", "temple", "farm", "forest", "mine", "harbor")


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def event(world_id: str, type_: str, **payload: Any) -> WorldEvent:
    return WorldEvent(
        event_id=f"ev-{uuid.uuid4().hex[:16]}",
        world_id=world_id,
        type=type_,
        payload=payload,
        occurred_at=datetime.now(UTC),
    )


def player_event(rng: random.Random, world_id: str) -> WorldEvent:
    npc, other = rng.sample([f"npc-{n}" for n in range(1, 9)], 2)
    roll = rng.random()
    if roll < 0.5:
        return event(world_id, "npc_moved", npc_id=npc, location_id=rng.choice(PLACES))
    if roll < 0.8:
        return event(world_id, "memory_recorded", npc_id=npc, content=f"{npc} met {other}")
    return event(
        world_id, "relationship_changed", npc_id=npc, other_npc_id=other, delta=rng.randint(-9, 9)
    )


def step_ceiling(worlds: int, seconds: float) -> float:
    """Baseline: ticks per CPU second of the pure step alone, round-robin over `worlds`
    villages (CPU time, so other load on the machine does not shrink it)."""
    states = []
    for number in range(worlds):
        world_id = f"baseline-{number}"
        loaded = apply_event(
            WorldState(world_id), event(world_id, "world_loaded", template="village")
        )
        assert isinstance(loaded, Applied)
        states.append(loaded.state)
    ticks = 0
    # Under the worker's collector thresholds: at Python's defaults the collector took ~10 %
    # of the step's CPU, which the worker no longer pays, and the ratio would flatter it.
    threshold = gc.get_threshold()
    gc.set_threshold(*collector_thresholds())
    try:
        started = time.perf_counter()
        cpu_started = time.process_time()
        while time.perf_counter() - started < seconds:
            index = ticks % worlds
            states[index], _ = step(states[index], states[index].tick + 1)
            ticks += 1
        return ticks / (time.process_time() - cpu_started)
    finally:
        gc.set_threshold(*threshold)


async def load_worlds(publisher: Publisher, world_ids: list[str], spread_s: float) -> None:
    chunks = 20
    size = -(-len(world_ids) // chunks)
    for start in range(0, len(world_ids), size):
        base = "https://cdn.scribe.invalid/worlds"
        await publisher.publish_many(
            event(w, "world_loaded", template="village", image_base_url=f"{base}/{w}")
            for w in world_ids[start : start + size]
        )
        await asyncio.sleep(spread_s / chunks)


async def wait_until_ticking(db: asyncpg.Connection, prefix: str, worlds: int) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ticking = await db.fetchval(
            "SELECT count(*) FROM world_state WHERE world_id LIKE $1 AND tick > 0", prefix + "%"
        )
        if ticking >= worlds:
            return
        say(f"  warming up: {ticking}/{worlds} worlds ticking")
        await asyncio.sleep(2)
    raise TimeoutError("the worlds did not all start ticking within 180 s")


async def retire_earlier_runs(database_url: str) -> None:
    """Worlds of an earlier run on the same state dir are still active in PostgreSQL and would
    tick beside this run's (the worker loads every active world of its partitions)."""
    db = await asyncpg.connect(database_url)
    try:
        await db.execute("UPDATE world_state SET active = false WHERE world_id LIKE 'bench-%'")
    except asyncpg.UndefinedTableError:
        pass  # a new stack: the worker creates the tables
    finally:
        await db.close()


async def table_activity(db: asyncpg.Connection, table: str) -> dict[str, int]:
    """PostgreSQL's running counts for `table`: its row updates, those that were HOT (the new
    version on the same page, no index entries), its dead rows, the autovacuums so far and its
    size with indexes and TOAST. A backend reports its counts within about a second."""
    row = await db.fetchrow(
        "SELECT n_tup_upd, n_tup_hot_upd, n_dead_tup, autovacuum_count + vacuum_count AS vacuums,"
        " pg_total_relation_size(relid) AS bytes FROM pg_stat_user_tables WHERE relname = $1",
        table,
    )
    return dict(row) if row is not None else {}


def runs_the_invalidation_flow() -> bool:
    """Whether the worker runs the invalidation flow (cache warming is part of it): not when
    SCRIBE_WORKER_FLOWS (which it inherits) names other flows only."""
    named = {part.strip() for part in os.environ.get("SCRIBE_WORKER_FLOWS", "").split(",")}
    return named <= {""} or "invalidation" in named


def invalidation_worker(worker: WorkerProcess, other: WorkerProcess | None) -> WorkerProcess | None:
    """The worker that hosts the invalidation flow: the second one under `--apart`; else the
    world worker, unless SCRIBE_WORKER_FLOWS leaves the flow out (then none)."""
    if other is not None:
        return other
    return worker if runs_the_invalidation_flow() else None


async def wait_until_warmed(worker: WorkerProcess | None, worlds: int) -> None:
    """Cache warming (its own flow in the invalidation worker) reads and caches each loaded
    world once; that is load-time work, not a tick's, so the window opens after it."""
    if worker is None:
        say("  no cache warming to wait for: SCRIBE_WORKER_FLOWS leaves out the invalidation flow")
        return
    pattern = re.compile(r'^scribe_cache_warming_total\{outcome="[a-z_]+"\} ([0-9.e+]+)$', re.M)
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            metrics = (await client.get(f"{worker.url}/metrics", timeout=10)).text
            done = sum(float(n) for n in pattern.findall(metrics))
            if done >= worlds:
                return
            say(f"  cache warming: {done:,.0f}/{worlds} worlds")
            await asyncio.sleep(2)
    say("  cache warming did not finish within 120 s; measuring anyway")


async def publish_players(
    publisher: Publisher, world_ids: list[str], rate: float, seconds: float, db: Any
) -> int:
    rng = random.Random(7)
    prefix = world_ids[0].rsplit("-", 1)[0] + "-"
    started = time.monotonic()
    next_report = started + 5
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        target = int(elapsed * rate)
        if target > sent:
            batch = [player_event(rng, rng.choice(world_ids)) for _ in range(target - sent)]
            sent += await publisher.publish_many(batch)
        if time.monotonic() >= next_report:
            next_report += 5
            ticks = await db.fetchval(
                "SELECT sum(tick) FROM world_state WHERE world_id LIKE $1", prefix + "%"
            )
            say(f"  {elapsed:5.0f}/{seconds:.0f} s  player events sent {sent:,}; ticks {ticks:,}")
        await asyncio.sleep(0.02)
    return sent


def histogram_mean(metrics: str, name: str, labels: str = "") -> float | None:
    """Mean of a histogram over the worker's life, from its _sum and _count."""
    values = {}
    for kind in ("sum", "count"):
        found = re.search(rf"^{name}_{kind}{re.escape(labels)} ([0-9.e+-]+)$", metrics, re.M)
        if found is None:
            return None
        values[kind] = float(found.group(1))
    return values["sum"] / values["count"] if values["count"] else None


TIMER_PHASES = ("apply", "wait_write", "drain")


def timer_seconds(samples: list[Sample]) -> dict[str, float]:
    """The world timer's wall time so far by phase (`scribe_world_timer_seconds_total`)."""
    return {
        phase: metric_sum(samples, "scribe_world_timer_seconds_total", phase=phase)
        for phase in TIMER_PHASES
    }


def wait_totals(samples: list[Sample], others: list[Sample]) -> dict[str, float]:
    """Running totals of the world writes' wall time, of the event loop's lateness and of the
    collector's pauses (all generations) in the world worker (`samples`): their differences
    over the window give each one's mean, or its total, in it. The invalidation flow's counts
    are read from both workers' samples (`others`: the second worker's under `--apart`)."""
    both = samples + others
    return {
        "write_s": metric_sum(samples, "scribe_sink_write_seconds_sum", sink="postgres.world"),
        "writes": metric_sum(samples, "scribe_sink_write_seconds_count", sink="postgres.world"),
        "loop_lag_s": metric_sum(samples, "scribe_event_loop_lag_seconds_sum"),
        "loop_probes": metric_sum(samples, "scribe_event_loop_lag_seconds_count"),
        "gc_pause_s": metric_sum(samples, "scribe_gc_pause_seconds_sum"),
        "gc_collections": metric_sum(samples, "scribe_gc_pause_seconds_count"),
        "invalidations_sent": metric_sum(
            samples, "scribe_messages_out_total", topic="cache.invalidations", agent="world"
        ),
        "invalidations_read": metric_sum(
            both, "scribe_messages_in_total", topic="cache.invalidations", agent="invalidation"
        ),
        "invalidations_behind": group_lag(both, ".invalidation"),
        "invalidations_behind_cdn": group_lag(both, ".invalidation-cdn"),
    }


def group_lag(samples: list[Sample], group_suffix: str) -> float:
    """cache.invalidations' lag in the group whose name ends with `group_suffix` (the Redis
    flow's or the CDN flow's)."""
    return sum(
        s.value
        for s in samples
        if s.name == "scribe_consumer_lag_messages"
        and s.labels.get("topic") == "cache.invalidations"
        and s.labels.get("group", "").endswith(group_suffix)
    )


def window_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """A world write's mean wall time and the event loop's mean lateness over the window, in
    ms (None: none in it)."""

    def mean_ms(total: str, count: str) -> float | None:
        n = after[count] - before[count]
        return round((after[total] - before[total]) / n * 1000, 1) if n else None

    return {
        "world_write_mean_ms": mean_ms("write_s", "writes"),
        "world_writes_in_window": after["writes"] - before["writes"],
        "event_loop_lag_mean_ms": mean_ms("loop_lag_s", "loop_probes"),
    }


def collector_pauses(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """How long garbage collections paused the worker over the window, in seconds, and how
    many there were, all generations together: each held every flow on its event loop."""
    return {
        "gc_pause_seconds_in_window": round(after["gc_pause_s"] - before["gc_pause_s"], 3),
        "gc_collections_in_window": after["gc_collections"] - before["gc_collections"],
    }


def invalidation_progress(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What the world flow sent to cache.invalidations over the window, what the Redis
    invalidation flow read of it, and how far behind it and the CDN flow were at the window's
    end: a worker that ticks its worlds but leaves their invalidations unread does not keep
    up."""
    return {
        "invalidations_sent_in_window": after["invalidations_sent"] - before["invalidations_sent"],
        "invalidations_read_in_window": after["invalidations_read"] - before["invalidations_read"],
        "invalidations_behind_at_end": after["invalidations_behind"],
        "cdn_invalidations_behind_at_end": after["invalidations_behind_cdn"],
    }


def histogram_p99(metrics: str) -> float | None:
    """p99 upper bound from the worker's `scribe_world_tick_lag_seconds` buckets (timer)."""
    buckets = []
    pattern = r'scribe_world_tick_lag_seconds_bucket\{le="([^"]+)",source="timer"\} ([0-9.e+]+)'
    for le, count in re.findall(pattern, metrics):
        buckets.append((float("inf") if le == "+Inf" else float(le), float(count)))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return next(le for le, count in buckets if count >= 0.99 * total)


async def measure(
    args: argparse.Namespace,
    env: dict[str, str],
    worker: WorkerProcess,
    other: WorkerProcess | None,
) -> dict[str, Any]:
    """`other`: the second worker under `--apart` (None: the world worker hosts every flow)."""
    run = uuid.uuid4().hex[:6]
    prefix = f"bench-{run}-"
    world_ids = [f"{prefix}{n:04d}" for n in range(args.worlds)]
    idle = await idle_cpu_utilization(worker)
    servers = server_pids(env)
    say(f"  the worker idle, before any world: {idle:.1%} of a core")
    db = await asyncpg.connect(env["SCRIBE_DATABASE_URL"])
    try:
        async with Publisher(kafka_bootstrap_servers(env["SCRIBE_KAFKA_URL"])) as publisher:
            say(f"loading {args.worlds} worlds ...")
            await load_worlds(publisher, world_ids, spread_s=2.0)
            await wait_until_ticking(db, prefix, args.worlds)
            await wait_until_warmed(invalidation_worker(worker, other), args.worlds)
            await asyncio.sleep(3)  # let the start-up burst settle
            say(f"measuring for {args.seconds:.0f} s with {args.events_per_second}/s events ...")
            window_start = await db.fetchval("SELECT clock_timestamp()")
            heads_before = await table_activity(db, "world_state")
            cpu_before = worker.cpu_seconds()
            other_cpu_before = other.cpu_seconds() if other is not None else 0.0
            servers_before = {name: tree_cpu_seconds([pid]) for name, pid in servers.items()}
            machine_before = MachineCpu.now()
            loop_thread = ThreadWindow(worker.process.pid if worker.process else None)
            samples_before = worker.samples()  # one read of /metrics for both
            others_before = other.samples() if other is not None else []
            timer_before = timer_seconds(samples_before)
            waits_before = wait_totals(samples_before, others_before)
            sent = await publish_players(
                publisher, world_ids, args.events_per_second, args.seconds, db
            )
            cpu_after = worker.cpu_seconds()
            other_cpu_s = other.cpu_seconds() - other_cpu_before if other is not None else None
            samples_after = worker.samples()  # one read of /metrics for both
            others_after = other.samples() if other is not None else []
            timer_after = timer_seconds(samples_after)
            waits_after = wait_totals(samples_after, others_after)
            servers_cpu = {
                name: tree_cpu_seconds([pid]) - servers_before[name]
                for name, pid in servers.items()
            }
            machine_busy = MachineCpu.now().busy_share_since(machine_before)
            loop_shares = loop_thread.shares()
            window_end = await db.fetchval("SELECT clock_timestamp()")
            await asyncio.sleep(1.5)  # the backends' counts of the window's last writes
            heads_after = await table_activity(db, "world_state")
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"{worker.url}/metrics", timeout=10)).text
        cpu_s = cpu_after - cpu_before
        window = (window_end - window_start).total_seconds()
        # The whole window and each slice of it, in one pass over its tick rows.
        lag_rows = await db.fetch(
            "SELECT slice, count(*) AS n, "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY lag) AS p50, "
            "percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) AS p99, max(lag) AS max "
            "FROM (SELECT extract(epoch FROM recorded_at - occurred_at) AS lag, "
            "             floor(extract(epoch FROM recorded_at - $2) / $4)::int AS slice "
            "      FROM world_events WHERE world_id LIKE $1 AND source = 'tick' "
            "      AND recorded_at >= $2 AND recorded_at < $3) AS t "
            "GROUP BY GROUPING SETS ((), (slice)) ORDER BY slice NULLS FIRST",
            prefix + "%",
            window_start,
            window_end,
            LAG_SLICE_S,
        )
        ticks, slices = lag_rows[0], lag_rows[1:]
        events_applied = await db.fetchval(
            "SELECT count(*) FROM world_events WHERE world_id LIKE $1 AND source = 'event' "
            "AND type <> 'world_loaded' AND recorded_at >= $2 AND recorded_at < $3",
            prefix + "%",
            window_start,
            window_end,
        )
    finally:
        await db.close()
    return (
        {
            "worlds": args.worlds,
            "window_s": round(window, 2),
            "player_events_sent": sent,
            "player_events_applied_per_s": round(events_applied / window, 1),
            "ticks_per_s": round(ticks["n"] / window, 1),
            "tick_lag_p50_s": round(float(ticks["p50"] or 0), 3),
            "tick_lag_p99_s": round(float(ticks["p99"] or 0), 3),
            "tick_lag_max_s": round(float(ticks["max"] or 0), 3),
            "tick_lag_by_slice": [
                {
                    "from_s": LAG_SLICE_S * row["slice"],
                    "ticks": row["n"],
                    "p50_s": round(float(row["p50"]), 3),
                    "max_s": round(float(row["max"]), 3),
                }
                for row in slices
            ],
            "worker_histogram_p99_upper_bound_s": histogram_p99(metrics),
            "worker_mean_write_s": histogram_mean(
                metrics, "scribe_sink_write_seconds", '{sink="postgres.world"}'
            ),
            "worker_mean_rows_per_write": histogram_mean(
                metrics, "scribe_sink_batch_size", '{sink="postgres.world"}'
            ),
            "worker_cpu_utilization": round(cpu_s / window, 3),
            # The share of the window the world timer spent in each phase of its calls; the rest
            # it spent between calls.
            "timer_share_of_window": {
                phase: round((timer_after[phase] - timer_before[phase]) / window, 3)
                for phase in TIMER_PHASES
            },
            # A write's wall time beside PostgreSQL's CPU for it: each of its round trips also
            # waits for the worker's event loop to read the answer.
            **window_means(waits_before, waits_after),
            **collector_pauses(waits_before, waits_after),
            **invalidation_progress(waits_before, waits_after),
            # `world_state` gets one update per world per write: when the new row version cannot
            # stay on its page (not HOT), every index gets an entry and the table and its indexes
            # grow until vacuumed.
            **world_state_activity(heads_before, heads_after),
            # Every core's time over the window that was not idle: a run whose machine was full
            # says so beside its lag.
            "machine_busy_share": round(machine_busy, 3),
            # The worker's event-loop thread: on a core, runnable but waiting for one, or idle
            # (waiting for I/O or a timer). Its CPU share alone reads a thread short of a core
            # as idle.
            **loop_thread_shares(loop_shares),
            "worker_cpu_ms_per_tick": round(1000 * cpu_s / max(1, ticks["n"]), 3),
            # What the same worker spent with no world (its flows' consumers polling, timers,
            # metrics), and the CPU per tick above it.
            "worker_idle_cpu_utilization": round(idle, 3),
            "worker_cpu_ms_per_tick_above_idle": round(
                1000 * max(0.0, cpu_s - idle * window) / max(1, ticks["n"]), 3
            ),
        }
        | (
            # Under `--apart`, the second worker (the invalidations' delivery, cache warming, the
            # idle router and usage flows) over the same window, per tick.
            {}
            if other_cpu_s is None
            else {
                "other_worker_cpu_utilization": round(other_cpu_s / window, 3),
                "other_worker_cpu_ms_per_tick": round(1000 * other_cpu_s / max(1, ticks["n"]), 3),
            }
        )
        | {
            # The servers beside it over the same window, per tick (player events and the
            # invalidations the ticks caused included); absent for a server on another machine.
            f"{name}_cpu_ms_per_tick": round(1000 * seconds / max(1, ticks["n"]), 3)
            for name, seconds in servers_cpu.items()
        }
    )


def world_state_activity(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    if not before or not after:
        return {}
    updates = after["n_tup_upd"] - before["n_tup_upd"]
    hot = after["n_tup_hot_upd"] - before["n_tup_hot_upd"]
    return {
        "world_state_updates": updates,
        "world_state_hot_update_share": round(hot / updates, 3) if updates else None,
        "world_state_dead_rows_after": after["n_dead_tup"],
        "world_state_vacuums_in_window": after["vacuums"] - before["vacuums"],
        "world_state_mb_before": round(before["bytes"] / 2**20, 1),
        "world_state_mb_after": round(after["bytes"] / 2**20, 1),
    }


async def idle_cpu_utilization(worker: WorkerProcess, seconds: float = 10.0) -> float:
    """The worker's CPU share with nothing to do, once its groups have settled."""
    await asyncio.sleep(5)
    cpu_before, started = worker.cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    return (worker.cpu_seconds() - cpu_before) / (time.monotonic() - started)


def loop_thread_shares(shares: tuple[float, float, float] | None) -> dict[str, float]:
    """The window's shares of the worker's event-loop thread; none where the kernel keeps no
    schedstat."""
    if shares is None:
        return {}
    running, waiting, idle = shares
    return {
        "worker_loop_thread_running_share": round(running, 3),
        "worker_loop_thread_waiting_share": round(waiting, 3),
        "worker_loop_thread_idle_share": round(idle, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--events-per-second", type=float, default=100)
    parser.add_argument("--state-dir", type=Path, default=Path(".scribe/bench-world"))
    parser.add_argument(
        "--broker",
        choices=BROKERS,
        help="start this broker here (default: SCRIBE_*_URL when set, else tansu)",
    )
    parser.add_argument(
        "--apart",
        action="store_true",
        help="the world flow alone in the measured worker, every other flow in a second worker",
    )
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    say(f"load average {load_before:.1f} on {os.cpu_count()} cores")
    say("baseline: the pure step in this process, 5 s ...")
    ceiling = step_ceiling(min(args.worlds, 200), 5.0)
    say(f"  {ceiling:,.0f} ticks per CPU second")
    with ExitStack() as stack:
        if args.broker is None:
            env = stack.enter_context(services_for_tests(args.state_dir.resolve() / "stack"))
        else:
            say(f"starting the stack with {args.broker} ...")
            env = stack.enter_context(stack_on(args.broker, args.state_dir.resolve(), say))
        worker_env = env | {"SCRIBE_WORLD_TICK_SECONDS": "1", "SCRIBE_WORLD_IDLE_SECONDS": "3600"}
        workers_dir = args.state_dir.resolve() / "workers"
        other = None
        if args.apart:
            # One app id: the two workers join the same groups' names, each only its flows'.
            other = new_worker(
                worker_env | {"SCRIBE_WORKER_FLOWS": ",".join(OTHER_FLOWS)},
                workers_dir,
                "scribe-bench-world",
            )
            worker_env |= {"SCRIBE_WORKER_FLOWS": "world"}
        worker = new_worker(worker_env, workers_dir, "scribe-bench-world")
        stack.callback(worker.stop)
        asyncio.run(retire_earlier_runs(env["SCRIBE_DATABASE_URL"]))
        if other is not None:
            stack.callback(other.stop)
            say(f"starting the second worker ({', '.join(OTHER_FLOWS)}) ...")
            other.start()
        say("starting the worker ..." if other is None else "starting the world worker ...")
        worker.start()
        result = asyncio.run(measure(args, env, worker, other))
    required = float(args.worlds)
    result |= {
        "flows": "world | " + ",".join(OTHER_FLOWS) if args.apart else "all in one worker",
        "broker": args.broker or ("given" if os.environ.get("SCRIBE_KAFKA_URL") else "tansu"),
        "cpu_cores": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "required_ticks_per_s": required,
        "ratio_to_required": round(result["ticks_per_s"] / required, 3),
        "baseline_pure_step_ticks_per_cpu_s": round(ceiling, 1),
        "baseline_pure_step_cpu_ms_per_tick": round(1000 / ceiling, 3),
        # How much the pipeline (Kafka, PostgreSQL, invalidations, player events) costs on
        # top of the simulation itself, per tick: worker CPU per tick / pure step CPU per tick.
        "cpu_per_tick_ratio_to_pure_step": round(
            result["worker_cpu_ms_per_tick"] * ceiling / 1000, 2
        ),
        "cpu_per_tick_above_idle_ratio_to_pure_step": round(
            result["worker_cpu_ms_per_tick_above_idle"] * ceiling / 1000, 2
        ),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"world_ticks-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print_summary(result, ceiling, apart=args.apart)
    print(f"results: {out}")
    return 0


def print_summary(result: dict[str, Any], ceiling: float, apart: bool) -> None:
    required = result["required_ticks_per_s"]
    print(
        f"\n{result['ticks_per_s']:,.0f} world ticks/s on one worker "
        f"({result['ratio_to_required']:.2f}x the required {required:,.0f}/s), "
        f"worker CPU {result['worker_cpu_utilization']:.0%} of a core, "
        f"{result['worker_cpu_ms_per_tick']:.2f} ms CPU per tick "
        f"({result['cpu_per_tick_ratio_to_pure_step']:.1f}x the pure step's "
        f"{1000 / ceiling:.2f} ms; {result['cpu_per_tick_above_idle_ratio_to_pure_step']:.1f}x "
        f"above the idle worker's {result['worker_idle_cpu_utilization']:.0%} of a core); "
        f"tick lag p99 {result['tick_lag_p99_s']:.3f} s; "
        f"{result['player_events_applied_per_s']:,.0f} player events/s applied"
    )
    if apart:
        print(
            f"the world flow alone in that worker; the second worker ({', '.join(OTHER_FLOWS)}) "
            f"used {result['other_worker_cpu_utilization']:.0%} of a core, "
            f"{result['other_worker_cpu_ms_per_tick']:.3f} ms per tick"
        )
    shares = result["timer_share_of_window"]
    print(
        f"the world timer over the window: applying {shares['apply']:.0%}, waiting for the "
        f"write before the next round {shares['wait_write']:.0%}, draining a call's last "
        f"write {shares['drain']:.0%}, between calls {1 - sum(shares.values()):.0%}"
    )
    print(
        f"a world write took {result['world_write_mean_ms']} ms on average "
        f"({result['world_writes_in_window']:,.0f} writes); the event loop woke its probe "
        f"{result['event_loop_lag_mean_ms']} ms late on average"
    )
    print(
        f"the collector paused the worker {result['gc_collections_in_window']:,.0f} times over "
        f"the window, {1000 * result['gc_pause_seconds_in_window']:,.0f} ms in all"
    )
    if apart or runs_the_invalidation_flow():
        print(
            f"the invalidation flow read {result['invalidations_read_in_window']:,.0f} of the "
            f"{result['invalidations_sent_in_window']:,.0f} invalidation messages the world flow "
            f"sent over the window; {result['invalidations_behind_at_end']:,.0f} behind at its end "
            f"({result['cdn_invalidations_behind_at_end']:,.0f} in the CDN flow)"
        )
    print(
        f"tick lag p50 / max in each {LAG_SLICE_S} s of the window: "
        + ", ".join(f"{s['p50_s']:.2f}/{s['max_s']:.2f}" for s in result["tick_lag_by_slice"])
    )
    beside = [
        f"{name.replace('_', ' ')} {result[f'{name}_cpu_ms_per_tick']:.3f} ms"
        for name in ("other_worker", *SERVERS)
        if f"{name}_cpu_ms_per_tick" in result
    ]
    if beside:
        print(f"CPU per tick beside the worker's: {', '.join(beside)}")
    print(
        f"the machine: {result['machine_busy_share']:.0%} of its {os.cpu_count()} cores busy "
        "over the window"
    )
    if "worker_loop_thread_running_share" in result:
        shares = tuple(
            result[f"worker_loop_thread_{part}_share"] for part in ("running", "waiting", "idle")
        )
        print(f"the worker's event-loop thread over the window: {thread_time_text(shares)}")
    if result.get("world_state_updates"):
        print(
            f"world_state: {result['world_state_updates']:,} updates, "
            f"{result['world_state_hot_update_share']:.0%} HOT; "
            f"{result['world_state_mb_before']} -> {result['world_state_mb_after']} MB; "
            f"{result['world_state_dead_rows_after']:,} dead rows after, "
            f"{result['world_state_vacuums_in_window']} vacuum(s) in the window"
        )


if __name__ == "__main__":
    sys.exit(main())
