"""Scale-out on Apache Kafka: the same usage load through 1, 2 and 3 `scribe worker` processes
in one consumer group, side by side, reported as events/s, the ratio to 1 worker, and how the
partitions and the events were spread over the workers.

    .venv/bin/python bench/scale_out.py [--events 60000] [--rounds 2] [--brokers 1]

Kafka: SCRIBE_KAFKA_URL if set, else a fresh Apache Kafka cluster of --brokers nodes started
here (the jars `scripts/kafka.sh` caches). PostgreSQL and Redis: the embedded stack. Each round
publishes its load as a backlog for a new consumer group, then starts the workers together; from
the moment every worker holds partitions, events/s is the events still to do over the time until
the last ledger write (PostgreSQL's `ingested_at`): start-up and the producer are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agents.usage.flow import USAGE
from bench.processes import tree_cpu_seconds
from devkit.harness import group_assignment, group_offsets, new_worker
from devkit.stack import LocalStack
from devkit.stack.apache_kafka import KafkaCluster, fetch
from devkit.usage_load import ledger_count, publish_usage, usage_events
from runtime.settings import ResolvedSettings, kafka_bootstrap_servers
from topics.admin import ensure_topics
from topics.catalog import USAGE_EVENTS

ROOT = Path(__file__).resolve().parents[1]

PARTITIONS = 6  # for topics created here: divisible by 1, 2 and 3 workers


@dataclass(frozen=True)
class RoundResult:
    workers: int
    events: int  # processed once every worker held partitions: the events measured
    events_per_s: float
    wall_s: float
    partitions: list[int]
    events_per_worker: list[int]
    worker_cpu_s_per_1k: float  # CPU seconds all workers spent per 1,000 events
    service_cpu_s_per_1k: dict[str, float]  # the same for Kafka and PostgreSQL, when ours
    machine_busy: float  # share of all cores busy (every process) while the load ran
    sink_retries: int  # ledger writes retried (e.g. a deadlock between workers)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def machine_busy_since(before: Any) -> float:
    after = psutil.cpu_times()
    idle = (after.idle + after.iowait) - (before.idle + before.iowait)
    total = sum(after) - sum(before)
    return 1 - idle / total if total else 0.0


async def start_group_at_end(kafka_url: str, group: str, partitions: int) -> None:
    """Commit the group's offsets at the topic's end, so the round reads only its own load."""
    async with group_offsets(kafka_url, group) as consumer:
        tps = [TopicPartition(USAGE_EVENTS.name, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit(dict(ends.items()))


async def wait_for_spread(
    kafka_url: str, group_id: str, workers: int, partitions: int
) -> list[int]:
    """Until the usage consumers of every worker are Stable and each holds partitions."""
    deadline = time.monotonic() + 120
    seen = None
    while time.monotonic() < deadline:
        seen = await group_assignment(kafka_url, group_id, USAGE_EVENTS.name)
        spread = seen.partitions
        stable = seen.state == "Stable" and len(spread) == workers and all(spread)
        if stable and sum(spread) == partitions:
            return sorted(spread, reverse=True)
        await asyncio.sleep(0.5)
    raise RuntimeError(f"partitions not shared within 120 s: {seen}")


async def one_round(
    env: dict[str, str],
    state_dir: Path,
    workers: int,
    events: int,
    partitions: int,
    *,
    services: dict[str, list[int]],
) -> RoundResult:
    """The backlog first, then the workers, all started at once: events/s counts only what the
    group processed once every worker held its partitions, so neither start-up nor the producer
    takes a share of the time measured."""
    app_id = f"bench-scale-{uuid.uuid4().hex[:8]}"
    kafka_url, database_url = env["SCRIBE_KAFKA_URL"], env["SCRIBE_DATABASE_URL"]
    await start_group_at_end(kafka_url, USAGE.group_of(app_id), partitions)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    published = time.monotonic()
    await publish_usage(kafka_url, usage_events(run_id, events, users=500), report=say)
    say(f"  backlog of {events:,} events published in {time.monotonic() - published:.1f} s")
    conn = await asyncpg.connect(database_url)
    try:
        with ExitStack() as stack:
            group = [new_worker(env, state_dir, app_id) for _ in range(workers)]
            for worker in group:
                stack.callback(worker.stop)
            await asyncio.gather(*(asyncio.to_thread(w.start) for w in group))
            spread = await wait_for_spread(kafka_url, USAGE.group_of(app_id), workers, partitions)
            measured_from = await conn.fetchval("SELECT clock_timestamp()")
            stored_before = await ledger_count(conn, run_id)
            if stored_before > events // 2:
                raise RuntimeError(
                    f"{stored_before:,} of {events:,} events were processed before all "
                    f"{workers} workers held partitions; run with more --events"
                )
            before = [w.metric("scribe_usage_events_total") for w in group]
            cpu_before = sum(w.cpu_seconds() for w in group)
            services_before = {name: tree_cpu_seconds(pids) for name, pids in services.items()}
            machine_before = psutil.cpu_times()
            started = time.monotonic()
            next_report = started + 10
            while (stored := await ledger_count(conn, run_id)) < events:
                if time.monotonic() > started + 600:
                    raise RuntimeError(f"only {stored:,} of {events:,} stored after 600 s")
                if time.monotonic() >= next_report:
                    next_report += 10
                    say(f"  {workers} worker(s): {stored:,}/{events:,} stored")
                await asyncio.sleep(0.25)
            wall = time.monotonic() - started
            worker_cpu = sum(w.cpu_seconds() for w in group) - cpu_before
            services_cpu = {
                name: tree_cpu_seconds(pids) - services_before[name]
                for name, pids in services.items()
            }
            retries = sum(
                w.metric("scribe_sink_retries_total", sink="postgres.usage") for w in group
            )
            busy = machine_busy_since(machine_before)
            after = [w.metric("scribe_usage_events_total") for w in group]
        window = await conn.fetchval(
            "SELECT extract(epoch FROM max(ingested_at) - $2::timestamptz) "
            "FROM usage_events WHERE starts_with(event_id, $1)",
            f"{run_id}-",
            measured_from,
        )
    finally:
        await conn.close()
    measured = events - stored_before
    return RoundResult(
        workers=workers,
        events=measured,
        events_per_s=measured / max(float(window), 1e-3),
        wall_s=wall,
        partitions=spread,
        events_per_worker=[int(a - b) for a, b in zip(after, before, strict=True)],
        worker_cpu_s_per_1k=worker_cpu / measured * 1000,
        service_cpu_s_per_1k={name: cpu / measured * 1000 for name, cpu in services_cpu.items()},
        machine_busy=busy,
        sink_retries=int(retries),
    )


@contextmanager
def kafka(brokers: int, state_dir: Path) -> Iterator[tuple[str, list[int]]]:
    """Kafka's URL and, when it is started here, its processes."""
    url = os.environ.get("SCRIBE_KAFKA_URL")
    if url:
        yield url, []
        return
    cluster = KafkaCluster(state_dir / "kafka", fetch(ROOT / ".scribe" / "kafka", report=say))
    try:
        url = cluster.up(brokers, report=say)
        yield url, [node.pid for node in cluster.nodes()]
    finally:
        cluster.down(report=say, purge=True)


async def usage_partitions(kafka_url: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers(kafka_url))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([USAGE_EVENTS.name])
        return len(described["partitions"])
    finally:
        await admin.close()


async def run(
    args: argparse.Namespace,
    env: dict[str, str],
    state_dir: Path,
    services: dict[str, list[int]],
) -> list[RoundResult]:
    servers = kafka_bootstrap_servers(env["SCRIBE_KAFKA_URL"])
    await ensure_topics(ResolvedSettings.kafka_only(servers), PARTITIONS, args.rf)
    partitions = await usage_partitions(env["SCRIBE_KAFKA_URL"])
    say(f"{USAGE_EVENTS.name} has {partitions} partitions")
    results = []
    for round_number in range(1, args.rounds + 1):
        for workers in (1, 2, 3):
            say(f"round {round_number}: {workers} worker(s), {args.events:,} events ...")
            result = await one_round(
                env, state_dir, workers, args.events, partitions, services=services
            )
            say(
                f"  {result.events_per_s:,.0f} events/s; partitions {result.partitions}; "
                f"events per worker {result.events_per_worker}"
            )
            results.append(result)
    return results


def report(results: list[RoundResult], args: argparse.Namespace, load_before: float) -> None:
    by_workers = {n: [r for r in results if r.workers == n] for n in (1, 2, 3)}
    baseline = statistics.median(r.events_per_s for r in by_workers[1])
    print(
        f"\nscale-out on Apache Kafka ({args.kafka}); {os.cpu_count()} cores; "
        f"load average before: {load_before:.2f}; {args.events:,} usage events per run"
    )
    names = sorted(results[0].service_cpu_s_per_1k)
    print(
        f"{'workers':>7} {'events/s (median)':>18} {'vs 1':>6} {'runs':>22}  "
        f"CPU s per 1k events: {'workers':>7} {' '.join(f'{n:>8}' for n in names)}  "
        f"{'busy':>5} {'retries':>7}  partitions  events/worker"
    )
    for n, rounds in by_workers.items():
        median = statistics.median(r.events_per_s for r in rounds)
        runs = ", ".join(f"{r.events_per_s:,.0f}" for r in rounds)
        cpu = statistics.median(r.worker_cpu_s_per_1k for r in rounds)
        services = " ".join(
            f"{statistics.median(r.service_cpu_s_per_1k[s] for r in rounds):>8.3f}" for s in names
        )
        busy = statistics.median(r.machine_busy for r in rounds)
        retries = sum(r.sink_retries for r in rounds)
        last = rounds[-1]
        print(
            f"{n:>7} {median:>18,.0f} {median / baseline:>5.2f}x {runs:>22}  "
            f"{'':>20} {cpu:>7.3f} {services}  {busy:>5.0%} {retries:>7}  "
            f"{last.partitions!s:<11} {last.events_per_worker}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--brokers", type=int, default=1, help="when no SCRIBE_KAFKA_URL")
    args = parser.parse_args()
    args.rf = (
        min(3, args.brokers)
        if not os.environ.get("SCRIBE_KAFKA_URL")
        else int(os.environ.get("SCRIBE_TOPIC_REPLICATION", "1"))
    )
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="scribe-bench-") as tmp:
        state_dir = Path(tmp)
        stack = LocalStack(state_dir / "stack", broker=None)
        with (
            kafka(args.brokers, state_dir) as (kafka_url, kafka_pids),
            stack.running(report=say) as stack_env,
        ):
            services = {"postgres": [s.pid for s in stack.status() if s.name == "postgres"]}
            if kafka_pids:
                services["kafka"] = kafka_pids
            args.kafka = (
                "SCRIBE_KAFKA_URL"
                if os.environ.get("SCRIBE_KAFKA_URL")
                else f"{args.brokers} broker(s)"
            )
            env = {
                **stack_env,
                "SCRIBE_KAFKA_URL": kafka_url,
                "SCRIBE_TOPIC_PARTITIONS": str(PARTITIONS),
                "SCRIBE_TOPIC_REPLICATION": str(args.rf),
                "SCRIBE_FAST_REBALANCE": "1",
            }
            results = asyncio.run(run(args, env, state_dir / "workers", services))
    report(results, args, load_before)
    out = ROOT / "bench" / "results" / f"scale_out-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
