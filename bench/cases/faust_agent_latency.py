"""Publish -> a Faust agent sees it, at a low rate (5 messages/s to one partition): the latency
the worker consumer's fetch wait adds on a broker that answers an empty fetch only when that
wait expires (Tansu). Faust hard-codes 1500 ms; the `short` run uses
`bench/faust_fetch_wait.py`'s short wait instead.

Run by the `faust.agent_latency` case (`bench/cases/usage.py`) as a child process:
    python bench/cases/faust_agent_latency.py faust|short COUNT RESULT_FILE
It writes `<messages seen> <p50 ms> <p99 ms>` to RESULT_FILE and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaProducer

from bench.faust_fetch_wait import use_short_fetch_wait
from devkit.stack.processes import free_port
from runtime.settings import Settings, kafka_bootstrap_servers
from scribe.app import faust_settings

WARM_UP_S = 8.0  # the worker joins its group before the first message
INTERVAL_S = 0.2


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def build_app(wait: str, count: int, result_file: Path) -> faust.App:
    settings = Settings.from_env().require()
    app_id = f"bench-latency-{uuid.uuid4().hex[:6]}"
    config = faust_settings(settings) | {"web_port": free_port(), "datadir": f"/tmp/{app_id}"}
    app = faust.App(app_id, **config)
    if wait == "short":
        use_short_fetch_wait(app)
    name = f"bench-latency-{uuid.uuid4().hex[:6]}"
    topic = app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    seen: list[float] = []
    all_seen = asyncio.Event()

    @app.agent(topic)
    async def record(stream: Any) -> None:
        async for value in stream:
            seen.append((time.time() - float(value)) * 1000)
            if len(seen) >= count:
                all_seen.set()

    async def drive() -> None:
        await asyncio.sleep(WARM_UP_S)
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap_servers(settings.kafka_url), linger_ms=0
        )
        await producer.start()
        try:
            for _ in range(count):
                await producer.send_and_wait(name, str(time.time()).encode(), partition=0)
                await asyncio.sleep(INTERVAL_S)
            with contextlib.suppress(TimeoutError):  # the result says how many arrived
                await asyncio.wait_for(all_seen.wait(), 10)
        finally:
            await producer.stop()
        ordered = sorted(seen) or [float("nan")]
        line = f"{len(seen)} {statistics.median(ordered)} {percentile(ordered, 99)}\n"
        await asyncio.to_thread(result_file.write_text, line)
        os._exit(0)  # the result is written; Faust's shutdown adds nothing to measure

    app.task(drive)
    return app


def main() -> None:
    wait, count, result_file = sys.argv[1:4]
    app = build_app(wait, int(count), Path(result_file))
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


if __name__ == "__main__":
    main()
