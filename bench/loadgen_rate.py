"""Does `scribe loadgen` hold its target rate? And how much headroom has it?

    .venv/bin/python bench/loadgen_rate.py [--rate 5000] [--seconds 30] [--ceiling-events 50000]

Uses the services SCRIBE_*_URL name, or starts an embedded stack in a temporary directory
(stopped afterwards). Two measurements, side by side:

1. paced: the workload at `--rate` for `--seconds` through the Publisher (acks=all), exactly as
   `scribe loadgen` sends it; the ratio is achieved / target (acknowledged events over the time
   until the last acknowledgement), with the slowest and fastest full second.
2. ceiling: as fast as possible, the loadgen path (generate, validate, encode, Publisher) versus
   a baseline of pre-encoded bytes through a bare aiokafka producer with the same settings; the
   ratio says what the workload and the publisher cost, and ceiling / target the headroom.

Results also go to bench/results/loadgen_rate-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from devkit.loadgen.runner import Progress, run_load
from devkit.loadgen.workload import Malformed, Workload, WorkloadConfig
from devkit.stack import LocalStack
from runtime.settings import ResolvedSettings, kafka_bootstrap_servers
from schemas import encode
from topics.admin import ensure_topics
from topics.catalog import topic_for
from topics.publisher import DEFAULT_LINGER_MS, MAX_BATCH_BYTES, Publisher

RESULTS = Path(__file__).parent / "results"
TOLERANCE = 0.10


@contextmanager
def _kafka() -> Iterator[tuple[str, str]]:
    if os.environ.get("SCRIBE_KAFKA_URL"):
        yield os.environ["SCRIBE_KAFKA_URL"], "SCRIBE_KAFKA_URL"
        return
    with (
        tempfile.TemporaryDirectory(prefix="scribe-bench-") as root,
        LocalStack(Path(root)).running() as env,
    ):
        yield env["SCRIBE_KAFKA_URL"], "embedded stack (Tansu)"


def _config() -> WorkloadConfig:
    return WorkloadConfig(seed=11, run_id=f"bench-{int(time.time())}", prefix="bench-")


async def _paced(servers: list[str], rate: float, seconds: float) -> dict[str, Any]:
    async with Publisher(servers) as publisher:
        report = await run_load(publisher, Workload(_config()), rate, seconds, progress=Progress())
    for line in report.lines():
        print(line)
    full = report.full_seconds
    return {
        "target_rate": rate,
        "seconds": seconds,
        "acknowledged": report.acknowledged,
        "failed": report.failed,
        "elapsed_s": round(report.elapsed, 3),
        "achieved_rate": round(report.achieved_rate, 1),
        "ratio": round(report.ratio, 4),
        "slowest_second": min(full) if full else 0,
        "fastest_second": max(full) if full else 0,
        "full_seconds": len(full),
        "seconds_within_10pct": report.seconds_within(TOLERANCE),
        "idempotent": publisher.idempotent,
    }


async def _loadgen_ceiling(servers: list[str], count: int) -> float:
    """Events/s of the loadgen path with no pacing: generate, validate, encode, publish."""
    workload = Workload(_config())
    async with Publisher(servers) as publisher:
        started = time.perf_counter()
        futures = []
        for _ in range(count):
            message = workload.next()
            if isinstance(message, Malformed):
                continue
            futures.append(await publisher.enqueue(message))
        await asyncio.gather(*futures)
        return len(futures) / (time.perf_counter() - started)


async def _baseline_ceiling(servers: list[str], count: int) -> float:
    """Events/s of a bare aiokafka producer sending bytes encoded beforehand."""
    workload = Workload(_config())
    prepared = []
    for _ in range(count):
        message = workload.next()
        if not isinstance(message, Malformed):
            spec = topic_for(message)
            prepared.append((spec.name, spec.key_of(message), encode(message)))
    producer = AIOKafkaProducer(
        bootstrap_servers=servers,
        acks="all",
        linger_ms=DEFAULT_LINGER_MS,
        max_batch_size=MAX_BATCH_BYTES,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(name, value, key=key) for name, key, value in prepared]
        await asyncio.gather(*futures)
        return len(futures) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def _bench(kafka_url: str, args: argparse.Namespace) -> dict[str, Any]:
    servers = kafka_bootstrap_servers(kafka_url)
    await ensure_topics(ResolvedSettings.kafka_only(servers), 4, 1)
    print(f"1. paced: {args.rate:,.0f} events/s for {args.seconds:g} s", file=sys.stderr)
    paced = await _paced(servers, args.rate, args.seconds)
    print(f"2. ceiling: {args.ceiling_events:,} events, unpaced, each way", file=sys.stderr)
    baseline = await _baseline_ceiling(servers, args.ceiling_events)
    loadgen = await _loadgen_ceiling(servers, args.ceiling_events)
    return {
        "paced": paced,
        "ceiling": {
            "baseline_bare_producer_rate": round(baseline, 1),
            "loadgen_rate": round(loadgen, 1),
            "loadgen_over_baseline": round(loadgen / baseline, 3),
            "loadgen_ceiling_over_target": round(loadgen / args.rate, 2),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--ceiling-events", type=int, default=50_000)
    args = parser.parse_args()
    with _kafka() as (kafka_url, where):
        print(f"broker: {where} at {kafka_url}", file=sys.stderr)
        result = asyncio.run(_bench(kafka_url, args))
    result["broker"] = where
    result["cpus"] = os.cpu_count()
    paced, ceiling = result["paced"], result["ceiling"]
    held = abs(paced["ratio"] - 1) <= TOLERANCE and paced["failed"] == 0
    print("\n== loadgen rate benchmark ==")
    print(
        f"paced    target {paced['target_rate']:,.0f}/s  achieved {paced['achieved_rate']:,.0f}/s"
        f"  ratio {paced['ratio']:.3f}  -> {'HELD' if held else 'NOT HELD'} within 10 %\n"
        f"         per second: slowest {paced['slowest_second']:,}, fastest "
        f"{paced['fastest_second']:,}; {paced['seconds_within_10pct']} of "
        f"{paced['full_seconds']} seconds within 10 %"
    )
    print(
        f"ceiling  baseline (bare aiokafka, pre-encoded) "
        f"{ceiling['baseline_bare_producer_rate']:,.0f}/s"
        f"  loadgen {ceiling['loadgen_rate']:,.0f}/s  ratio {ceiling['loadgen_over_baseline']:.2f}"
        f"  headroom {ceiling['loadgen_ceiling_over_target']:.1f}x the target"
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"loadgen_rate-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {path}")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
