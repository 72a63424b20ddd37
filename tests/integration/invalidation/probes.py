"""Observe a running invalidation pipeline from outside: committed offsets of its consumer
group, what the CDN simulator recorded, and the worker's metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from devkit.harness import WorkerProcess, group_offsets


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.1
) -> bool:
    """Poll `check` until it is true or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


async def committed_through(
    kafka_url: str, group: str, last: dict[TopicPartition, int], timeout: float
) -> bool:
    """True once `group` has committed past offset `last[tp]` on every partition."""
    async with group_offsets(kafka_url, group) as consumer:

        async def done() -> bool:
            for tp, offset in last.items():
                committed = await consumer.committed(tp)
                if committed is None or committed <= offset:
                    return False
            return True

        return await eventually(done, timeout, interval=0.25)


async def purged(
    cdn: httpx.AsyncClient, contains: str, provider: str | None = None, kind: str | None = None
) -> list[str]:
    """Targets the CDN simulator purged whose text contains `contains`, one per purge."""
    params = {"contains": contains}
    if provider:
        params["provider"] = provider
    if kind:
        params["kind"] = kind
    response = await cdn.get("/_sim/purges", params=params)
    response.raise_for_status()
    return [p["target"] for p in response.json()["purges"]]


async def metric(worker_url: str, name: str, **labels: str) -> float:
    """The sum of the worker's samples named `name` whose labels include `labels`."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{worker_url}/metrics", timeout=10)).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


async def invalidation_health(worker: WorkerProcess) -> tuple[str, str]:
    """The invalidation component of the worker's /health: status and reason."""
    async with httpx.AsyncClient() as http:
        report = (await http.get(f"{worker.url}/health", timeout=10)).json()
    (component,) = [c for c in report["components"] if c["name"] == "invalidation"]
    return component["status"], component["reason"]
