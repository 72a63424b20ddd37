"""A consumer group of real `scribe worker` processes, and the checks the engine tests make on
it: how the partitions are spread, and a stream with a worker killed in the middle."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import asyncpg

from agents.usage.flow import USAGE
from devkit.harness import WorkerProcess, group_assignment, new_worker
from devkit.usage_load import (
    expected_daily,
    ledger_daily,
    publish_usage,
    usage_events,
    wait_until_stored,
    with_redeliveries,
)
from runtime.settings import Settings
from topics.catalog import USAGE_EVENTS

EVENTS = 12_000
RATE = 1_500  # events/s: the stream lasts ~8 s, so a kill after a third lands mid-stream
KILL_AFTER = 4_000


class WorkerGroup:
    """`scribe worker` processes in one consumer group (one app id), stopped when the test
    ends. Group timeouts are short (`SCRIBE_FAST_REBALANCE`: 6 s session) so a killed worker
    is noticed within 6 s instead of aiokafka's default 10 s."""

    def __init__(self, services: dict[str, str], state_dir: Path, stack: ExitStack) -> None:
        self.env = {**services, "SCRIBE_FAST_REBALANCE": "1"}
        self.state_dir = state_dir
        self.stack = stack
        self.app_id = f"scribe-engine-{os.urandom(4).hex()}"
        self.workers: list[WorkerProcess] = []

    def start(self, count: int = 1, **env: str) -> list[WorkerProcess]:
        started = []
        for _ in range(count):
            worker = new_worker({**self.env, **env}, self.state_dir, self.app_id)
            self.stack.callback(worker.stop)
            self.workers.append(worker.start())
            started.append(worker)
        return started

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    def logs(self) -> str:
        return "\n\n".join(f"== {w.log_path}\n{w.log_tail(30)}" for w in self.workers)


async def wait_for_spread(group: WorkerGroup, kafka_url: str, timeout: float = 90) -> list[int]:
    """Until the group's usage consumers (one per worker, in their own consumer group) are
    Stable, one per live worker, each holding some usage.events partitions and all together
    holding every one; returns how many each holds."""
    total = Settings.from_env().topic_partitions
    expected_members = len(group.alive())
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = await group_assignment(kafka_url, USAGE.group_of(group.app_id), USAGE_EVENTS.name)
        spread = seen.partitions
        if (
            seen.state == "Stable"
            and len(spread) == expected_members
            and all(spread)
            and sum(spread) == total
        ):
            return sorted(spread, reverse=True)
        await asyncio.sleep(0.5)
    raise AssertionError(f"partitions not shared within {timeout:.0f} s: {seen} of {total}")


async def stream_with_a_failure(
    group: WorkerGroup,
    db: asyncpg.Connection,
    kafka_url: str,
    fail: Callable[[], None],
    name: str = "stream",
) -> str:
    """Publish a usage stream (2 % of it sent twice) at a steady rate, call `fail` a third of
    the way in, and check that the drained ledger equals the exact sums of what was sent.
    Returns the run id."""
    run_id = f"{name}-{uuid.uuid4().hex[:8]}"
    events = usage_events(run_id, EVENTS)
    failed: list[int] = []

    def fail_mid_stream(sent: int) -> None:
        if sent >= KILL_AFTER and not failed:
            failed.append(sent)
            fail()

    await publish_usage(
        kafka_url, with_redeliveries(events, 0.02), rate=RATE, on_progress=fail_mid_stream
    )
    assert failed, "the failure was never injected"
    stored = await wait_until_stored(db, run_id, len(events), timeout=180, report=print)
    assert stored == len(events), group.logs()
    await asyncio.sleep(2)  # a late duplicate write would land in this window
    assert await ledger_daily(db, run_id) == expected_daily(events)
    return run_id
