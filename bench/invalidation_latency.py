"""Benchmark: publish -> Redis-deleted latency of the invalidation flow, p50/p99 at stated rates.

    .venv/bin/python bench/invalidation_latency.py --rates 200,1000,3000 --seconds 10

Runs on SCRIBE_*_URL or on a stack of its own (started here, stopped afterwards), with one
worker; `--broker apache` puts a one-broker Apache Kafka of its own beside the embedded
PostgreSQL and Redis instead of Tansu. Each invalidation removes one key that exists; Redis
keyspace notifications report the moment it is gone. The baseline, measured side by side on the
same messages, is bare Kafka delivery: publish -> a plain aiokafka consumer in this process. The
flow's own cost is the ratio of the two: its coalescing window plus the Redis work.

It also measures the coalescing ratio of a 10,000-invalidation burst over 1,000 keys (each ten
times): repeats clustered (ten entities written ten times each, as in the test) and shuffled
over the whole burst, both published at once, and shuffled repeats paced over one second
(where only repeats within one window can merge). Results go to bench/results/ as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from bench.brokers import BROKERS, stack_on
from devkit.harness import WorkerProcess, new_worker
from runtime.settings import Settings, kafka_bootstrap_servers
from schemas import encode
from schemas.events import CacheInvalidation
from topics.catalog import CACHE_INVALIDATIONS
from topics.publisher import Publisher

RESULTS = Path(__file__).parent / "results"
DELETED_CHANNEL = "__keyevent@0__:del"
FETCH_MAX_WAIT_MS = 20  # as the flow's consumer (agents/invalidation/flow.py)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def summary(latencies: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in latencies]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def invalidation(entity: str, key: str) -> CacheInvalidation:
    return CacheInvalidation(
        id=entity, keys=[key], reason="benchmark", occurred_at=datetime.now(UTC)
    )


async def _send(producer: AIOKafkaProducer, event: CacheInvalidation) -> Any:
    return await producer.send(
        CACHE_INVALIDATIONS.name, encode(event), key=CACHE_INVALIDATIONS.key_of(event)
    )


async def _metric(worker: WorkerProcess, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{worker.url}/metrics", timeout=10)).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


class Deletions:
    """Records when each key is deleted, from Redis keyspace notifications."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.redis.config_set("notify-keyspace-events", "Eg")
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(DELETED_CHANNEL)
        ready = asyncio.Event()

        async def listen() -> None:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    ready.set()
                elif message["type"] == "message":
                    self.at[message["data"].decode()] = time.monotonic()

        self._task = asyncio.create_task(listen())
        await asyncio.wait_for(ready.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.redis.config_set("notify-keyspace-events", "")


class LoopLag:
    """How late this process's event loop wakes a 5 ms sleep: the publisher, the baseline
    consumer and the deletion listener all share this loop, so a late wake-up is added to
    both latencies measured here. On a machine other work shares, it tells a run's noise."""

    TICK_S = 0.005

    def __init__(self) -> None:
        self.late: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        async def tick() -> None:
            while True:
                asked = time.monotonic()
                await asyncio.sleep(self.TICK_S)
                self.late.append(time.monotonic() - asked - self.TICK_S)

        self._task = asyncio.create_task(tick())

    def stop(self) -> float:
        """The p99 lateness in ms."""
        if self._task is not None:
            self._task.cancel()
        return round(percentile([v * 1000 for v in self.late], 99), 2) if self.late else 0.0


class Deliveries:
    """The baseline: when a plain consumer in this process receives each message."""

    def __init__(self, kafka_url: str, prefix: str) -> None:
        self.prefix = prefix.encode()
        self.at: dict[str, float] = {}
        # From the beginning, filtered by key: the embedded broker's end offsets are wrong.
        self.consumer = AIOKafkaConsumer(
            CACHE_INVALIDATIONS.name,
            bootstrap_servers=kafka_bootstrap_servers(kafka_url),
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            enable_auto_commit=False,
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()

        async def read() -> None:
            while True:
                batches = await self.consumer.getmany(timeout_ms=100)
                now = time.monotonic()
                for messages in batches.values():
                    for m in messages:
                        if m.key is not None and m.key.startswith(self.prefix):
                            self.at[m.key.decode()] = now

        self._task = asyncio.create_task(read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.consumer.stop()


async def measure_rate(env: dict[str, str], rate: int, seconds: float) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    count = int(rate * seconds)
    keys = [f"bench:{run}:{i}" for i in range(count)]
    entities = [f"bench-{run}-{i}" for i in range(count)]
    redis = aioredis.from_url(env["SCRIBE_REDIS_URL"])
    deletions = Deletions(aioredis.from_url(env["SCRIBE_REDIS_URL"]))
    deliveries = Deliveries(env["SCRIBE_KAFKA_URL"], f"bench-{run}-")
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap_servers(env["SCRIBE_KAFKA_URL"]), acks="all"
    )
    lag = LoopLag()
    try:
        for start in range(0, count, 5000):
            await redis.mset(dict.fromkeys(keys[start : start + 5000], 1))
        await deletions.start()
        await deliveries.start()
        await producer.start()
        sent: dict[int, float] = {}
        futures = []
        # This process timestamps both latencies: a full collection of its heap here took
        # 49-153 ms (0.76-0.90 s in, every run), and was counted into flow and baseline alike.
        gc.disable()
        lag.start()
        began = time.monotonic()
        next_progress = began + 5
        for i in range(count):
            delay = began + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[i] = time.monotonic()
            futures.append(await _send(producer, invalidation(entities[i], keys[i])))
            if time.monotonic() >= next_progress:
                next_progress += 5
                say(f"  {rate}/s: {i + 1:,} of {count:,} published, {len(deletions.at):,} deleted")
        for future in futures:
            await future
        achieved = count / (time.monotonic() - began)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(k in deletions.at for k in keys) == count and len(deliveries.at) == count:
                break
            await asyncio.sleep(0.2)
        pipeline = [deletions.at[k] - sent[i] for i, k in enumerate(keys) if k in deletions.at]
        baseline = [
            deliveries.at[e] - sent[i] for i, e in enumerate(entities) if e in deliveries.at
        ]
    finally:
        loop_lag_p99_ms = lag.stop()
        gc.enable()
        await producer.stop()
        await deliveries.stop()
        await deletions.stop()
        await redis.aclose()
        await deletions.redis.aclose()
    flow, kafka = summary(pipeline), summary(baseline)
    return {
        "rate_per_s": rate,
        "achieved_rate_per_s": round(achieved, 1),
        "seconds": seconds,
        "published": count,
        "deleted": len(pipeline),
        "publish_to_redis_deleted": flow,
        "baseline_publish_to_kafka_delivered": kafka,
        "p50_ratio": round(flow["p50_ms"] / max(kafka["p50_ms"], 0.01), 1),
        "p99_ratio": round(flow["p99_ms"] / max(kafka["p99_ms"], 0.01), 1),
        "bench_loop_lag_p99_ms": loop_lag_p99_ms,
    }


async def measure_burst(
    env: dict[str, str], worker: WorkerProcess, shuffled: bool, spread_seconds: float
) -> dict[str, Any]:
    """10,000 invalidations over 1,000 keys, each key ten times, keyed by entity: published
    at once (one produce batch per partition) or paced over `spread_seconds`."""
    run = uuid.uuid4().hex[:8]
    targets = [f"burst:{run}:{i}" for i in range(1000)]
    rng = random.Random(3)
    if shuffled:
        order = [t for t in targets for _ in range(10)]
        rng.shuffle(order)
    else:
        order = []
        for start in range(0, len(targets), 10):
            group = [t for t in targets[start : start + 10] for _ in range(10)]
            rng.shuffle(group)
            order.extend(group)
    events = [invalidation(f"entity-{t}", t) for t in order]
    received = await _metric(worker, "scribe_coalesce_targets_total", stage="received")
    purges = await _metric(worker, "scribe_invalidations_total", sink="redis", kind="key")
    bootstrap = kafka_bootstrap_servers(env["SCRIBE_KAFKA_URL"])
    began = time.monotonic()
    if spread_seconds <= 0:
        async with Publisher(bootstrap) as publisher:
            await publisher.publish_burst(events, CACHE_INVALIDATIONS)
    else:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            futures = []
            for i, event in enumerate(events):
                delay = began + i * spread_seconds / len(events) - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                futures.append(await _send(producer, event))
            for future in futures:
                await future
        finally:
            await producer.stop()
    published_in = time.monotonic() - began
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now_received = await _metric(worker, "scribe_coalesce_targets_total", stage="received")
        if now_received - received >= len(order):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # the last window's Redis stage
    done = await _metric(worker, "scribe_invalidations_total", sink="redis", kind="key") - purges
    return {
        "repeats": "shuffled over the burst" if shuffled else "clustered (ten entities at a time)",
        "published_in_s": round(published_in, 3),
        "invalidations": len(order),
        "distinct_targets": len(targets),
        "redis_purges": int(done),
        "coalescing_ratio": round(len(order) / done, 2) if done else None,
    }


@contextmanager
def services(settings: Settings, broker: str | None) -> Iterator[dict[str, str]]:
    """SCRIBE_*_URL when all are set and no broker is asked for; else the script's own stack."""
    if broker is None and settings.kafka_url and settings.database_url and settings.redis_url:
        yield {
            "SCRIBE_KAFKA_URL": settings.kafka_url,
            "SCRIBE_DATABASE_URL": settings.database_url,
            "SCRIBE_REDIS_URL": settings.redis_url,
        }
        return
    say(f"starting the embedded stack with {broker or 'tansu'} ...")
    with stack_on(broker or "tansu", settings.state_dir / "bench", report=say) as env:
        yield env


async def wait_live(env: dict[str, str]) -> None:
    """Until the worker's invalidation consumer has joined its group and deletes keys."""
    redis = aioredis.from_url(env["SCRIBE_REDIS_URL"])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers(env["SCRIBE_KAFKA_URL"]))
    await producer.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            key = f"bench:warmup:{uuid.uuid4().hex[:6]}"
            await redis.set(key, 1)
            await (await _send(producer, invalidation(f"warmup-{key}", key)))
            for _ in range(20):
                if not await redis.exists(key):
                    return
                await asyncio.sleep(0.1)
        raise TimeoutError("the worker's invalidation consumer did not start in 120 s")
    finally:
        await producer.stop()
        await redis.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="200,1000,3000", help="invalidations/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--window-ms", type=int, default=100, help="coalescing window, 50-200")
    parser.add_argument(
        "--broker",
        choices=BROKERS,
        help="start this broker here (default: SCRIBE_*_URL when set, else tansu)",
    )
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    settings = Settings.from_env()
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "window_ms": args.window_ms,
        "broker": args.broker or ("given" if os.environ.get("SCRIBE_KAFKA_URL") else "tansu"),
        "cpus": os.cpu_count(),
        "rates": [],
        "bursts": [],
    }
    with ExitStack() as stack:
        env = stack.enter_context(services(settings, args.broker))
        worker_env = {**env, "SCRIBE_INVALIDATION_WINDOW_MS": str(args.window_ms)}
        state = (Path.cwd() / settings.state_dir).resolve() / "bench"
        worker = new_worker(worker_env, state, f"scribe-bench-{uuid.uuid4().hex[:6]}")
        stack.callback(worker.stop)
        say("starting a worker ...")
        worker.start()
        asyncio.run(wait_live(env))
        for rate in rates:
            say(f"measuring {rate} invalidations/s for {args.seconds:.0f} s ...")
            results["rates"].append(asyncio.run(measure_rate(env, rate, args.seconds)))
        for shuffled, spread in ((False, 0.0), (True, 0.0), (True, 1.0)):
            say(f"burst of 10,000, {'shuffled' if shuffled else 'clustered'}, spread {spread} s")
            results["bursts"].append(asyncio.run(measure_burst(env, worker, shuffled, spread)))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"invalidation_latency-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2))
    print(
        f"\n== invalidation latency on {results['broker']} "
        f"(window {args.window_ms} ms, {os.cpu_count()} CPUs) =="
    )
    print(f"{'rate/s':>8} {'achieved':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
          f" | {'kafka p50':>9} {'kafka p99':>9} | {'p50 x':>6} {'p99 x':>6}"
          f" | {'lag p99':>7}")  # fmt: skip
    for r in results["rates"]:
        p, b = r["publish_to_redis_deleted"], r["baseline_publish_to_kafka_delivered"]
        print(
            f"{r['rate_per_s']:>8} {r['achieved_rate_per_s']:>9} {p['p50_ms']:>8} {p['p99_ms']:>8}"
            f" {p['max_ms']:>8} | {b['p50_ms']:>9} {b['p99_ms']:>9} |"
            f" {r['p50_ratio']:>6} {r['p99_ratio']:>6} | {r['bench_loop_lag_p99_ms']:>7}"
        )
    for b in results["bursts"]:
        print(
            f"burst {b['invalidations']:,} over {b['distinct_targets']:,} keys, repeats "
            f"{b['repeats']}, published in {b['published_in_s']} s: "
            f"{b['redis_purges']:,} Redis purges, ratio {b['coalescing_ratio']}"
        )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
