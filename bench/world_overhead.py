"""Benchmark: what the world flow costs per tick around the pure `step`, in one process.

    .venv/bin/python bench/world_overhead.py --worlds 1000 --rounds 30

One `WorldOwner` on a real (embedded, or SCRIBE_DATABASE_URL) PostgreSQL, no Kafka: N village
worlds are loaded, then the timer's round runs R times on a clock moved one second per round,
so every world ticks once per round (log rows, heads, checkpoints, the write, invalidations
built and encoded as the worker sends them). Side by side, in the same process and on the
same worlds, the pure `step` alone ticks each world once per round. Both are CPU time of this
process (the PostgreSQL server's is not counted), so the ratio is the flow's own overhead;
`bench/world_ticks.py` measures the whole worker, Kafka included.

For a profile of the flow's part, run it under py-spy:

    .venv/bin/py-spy record -r 200 -f raw -o /tmp/world.folded -- \
        .venv/bin/python bench/world_overhead.py --worlds 1000 --rounds 60
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg

from agents.intake import Received
from agents.world.invalidation import WorldInvalidation, one_per_partition
from agents.world.owner import WorldOwner
from agents.world.step import step
from devkit.stack import LocalStack
from runtime.partitioner import partition_of
from runtime.service import freeze_long_lived
from schemas import encode
from schemas.events import WorldEvent
from sinks.postgres.migrate import migrate
from sinks.postgres.world import WorldStore
from topics.dlq import DeadLetters, Origin

RESULTS = Path(__file__).parent / "results"
START = 1_800_000_000.0
# cache.invalidations' partitions at the default SCRIBE_TOPIC_PARTITIONS.
INVALIDATION_PARTITIONS = 4


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class _CollectorTime:
    """The garbage collector's CPU time and collections while in `gc.callbacks`."""

    def __init__(self) -> None:
        self.collections = 0
        self.cpu_s = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.collections += 1
            self.cpu_s += time.process_time() - self._started


class _NoDeadLetters:
    async def send_and_wait(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a village world dead-lettered something: {args}")


async def measure(database_url: str, worlds: int, rounds: int) -> dict[str, Any]:
    await migrate(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    sent = {"messages": 0, "bytes": 0}

    async def publish(invalidations: list[WorldInvalidation]) -> None:
        # What the worker does before handing the messages to the producer: merged into one
        # per partition (`send_invalidations`), each encoded.
        merged = one_per_partition(
            invalidations, lambda i: partition_of(i.id.encode(), INVALIDATION_PARTITIONS)
        )
        for _, message in merged:
            sent["bytes"] += len(encode(message))
        sent["messages"] += len(merged)

    clock = _Clock()
    owner = WorldOwner(
        WorldStore(pool),
        publish,
        DeadLetters(SimpleNamespace(producer=_NoDeadLetters())),
        tick_seconds=1.0,
        idle_seconds=3600.0,
        catch_up=3,
        clock=clock,
    )
    writes: list[float] = []
    write = owner.store.write

    async def timed_write(batch: Any) -> None:
        started = time.perf_counter()
        await write(batch)
        writes.append(time.perf_counter() - started)

    owner.store.write = timed_write  # type: ignore[method-assign]
    run = uuid.uuid4().hex[:6]
    world_ids = [f"overhead-{run}-{n:05d}" for n in range(worlds)]
    try:
        loads = [
            Received(
                WorldEvent(
                    event_id=f"load-{w}",
                    world_id=w,
                    type="world_loaded",
                    payload={"template": "village"},
                    occurred_at=datetime.fromtimestamp(START, UTC),
                ),
                Origin("world.events", 0, n, w.encode(), b""),
            )
            for n, w in enumerate(world_ids)
        ]
        for start in range(0, len(loads), 1000):
            await owner.apply_events(loads[start : start + 1000])
        # Warm up past the first checkpoints and the interpreter's caches.
        for _ in range(3):
            clock.now += 1.0
            await owner.tick_due()
        sent["messages"] = 0
        # As in `scribe worker` once each flow has started: the heap so far frozen, full
        # collections ten times rarer.
        freeze_long_lived()
        writes.clear()
        ticks_before = sum(owner.worlds[w].state.tick for w in world_ids)
        round_walls = []
        collector = _CollectorTime()
        gc.callbacks.append(collector)
        cpu_started = time.process_time()
        for _ in range(rounds):
            clock.now += 1.0
            wall = time.perf_counter()
            await owner.tick_due()
            round_walls.append(time.perf_counter() - wall)
        flow_cpu = time.process_time() - cpu_started
        gc.callbacks.remove(collector)
        ticks = sum(owner.worlds[w].state.tick for w in world_ids) - ticks_before
        invalidations = sent["messages"]

        # The pure step on the same worlds, as many ticks.
        states = {w: owner.worlds[w].state for w in world_ids}
        cpu_started = time.process_time()
        for _ in range(rounds):
            for w, state in states.items():
                states[w], _ = step(state, state.tick + 1)
        step_cpu = time.process_time() - cpu_started
    finally:
        await pool.close()
    round_walls.sort()
    writes.sort()
    return {
        "worlds": worlds,
        "rounds": rounds,
        "ticks": ticks,
        "invalidations_per_round": round(invalidations / rounds, 1),
        "flow_cpu_ms_per_tick": round(1000 * flow_cpu / ticks, 4),
        "pure_step_cpu_ms_per_tick": round(1000 * step_cpu / ticks, 4),
        "flow_cpu_ratio_to_pure_step": round(flow_cpu / step_cpu, 2),
        # Of the flow's CPU: the garbage collector's (runtime.service.YOUNG_COLLECTION_AFTER).
        "flow_gc_collections": collector.collections,
        "flow_gc_cpu_share": round(collector.cpu_s / flow_cpu, 3),
        "round_wall_p50_s": round(round_walls[len(round_walls) // 2], 3),
        "round_wall_max_s": round(round_walls[-1], 3),
        # The PostgreSQL transaction of a round, wall time (the server's CPU is in it).
        "write_wall_p50_s": round(writes[len(writes) // 2], 3),
        "write_wall_max_s": round(writes[-1], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scribe-overhead-")))
        database_url = os.environ.get("SCRIBE_DATABASE_URL")
        if not database_url:
            # PostgreSQL is all this needs: the stack without a broker.
            env = stack.enter_context(LocalStack(tmp / "stack", broker=None).running())
            database_url = env["SCRIBE_DATABASE_URL"]
        result = asyncio.run(measure(database_url, args.worlds, args.rounds))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"world_overhead-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"\n{result['flow_cpu_ms_per_tick']:.3f} ms CPU per tick in the flow, "
        f"{result['pure_step_cpu_ms_per_tick']:.3f} ms in the pure step: "
        f"{result['flow_cpu_ratio_to_pure_step']:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
