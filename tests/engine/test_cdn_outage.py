"""A three-minute CDN outage under the default retry settings: every invalidation issued before
and during it is purged once, none is dead-lettered, and /health says degraded throughout.

The CDN simulator answers every purge with 503 for 180 s (a timed fault it is told to serve).
An invalidation issued before the outage is purged once: after it when the outage caught it on
its way, else before it began and never again. The worker has the default CDN settings (a
15-minute retry deadline, backoff capped at 30 s, no attempt cap). The simulator records each
purge it accepts, so a purge made twice would show.
Marked `engine` because it takes over three minutes: `make test-engine` runs it once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from agents.invalidation.flow import CDN_INVALIDATION, INVALIDATION
from devkit.harness import WorkerProcess, new_worker, read_until
from runtime.settings import kafka_bootstrap_servers
from schemas import encode
from schemas.events import CacheInvalidation
from tests.integration.invalidation.probes import committed_through, eventually
from topics.catalog import CACHE_INVALIDATIONS

pytestmark = pytest.mark.engine

OUTAGE_SECONDS = 180.0
BEFORE = 40  # issued just before the outage starts
DURING = 60  # issued while it lasts
DEFAULT_DEADLINE_S = 900.0
# Empty is "unset": whatever the calling shell exports, the worker runs on the defaults.
DEFAULT_CDN_RETRY = {
    "SCRIBE_CDN_RETRY_DEADLINE_S": "",
    "SCRIBE_CDN_BACKOFF_CAP_S": "",
    "SCRIBE_CDN_MAX_ATTEMPTS": "",
}


@pytest.fixture
def outage_worker(services: dict[str, str], state_dir: Path) -> Iterator[WorkerProcess]:
    """A worker of its own, so the test's consumer group and CDN settings are its own; no world
    ticks, whose invalidations would only add purges."""
    env = services | {"SCRIBE_WORLD_TICK_SECONDS": "0"} | DEFAULT_CDN_RETRY
    process = new_worker(env, state_dir / "cdn-outage-worker").start()
    try:
        yield process
    finally:
        process.stop()


async def _invalidation_health(http: httpx.AsyncClient, worker: WorkerProcess) -> dict[str, Any]:
    report = (await http.get(f"{worker.url}/health", timeout=10)).json()
    (component,) = [c for c in report["components"] if c["name"] == "invalidation"]
    seen: dict[str, Any] = component | {"overall_status": report["overall_status"]}
    return seen


def _event(marker: str, phase: str, i: int) -> CacheInvalidation:
    return CacheInvalidation(
        id=f"cdn-outage-{marker}-{phase}-{i}",
        urls=[f"https://cdn.example/{marker}/{phase}/{i}"],
        reason=f"issued {phase} the CDN outage",
        occurred_at=datetime.now(UTC),
    )


async def test_a_three_minute_cdn_outage_costs_no_purge_and_no_dead_letter(
    services: dict[str, str], kafka_url: str, outage_worker: WorkerProcess
) -> None:
    worker = outage_worker
    marker = uuid.uuid4().hex[:10]
    cdn = httpx.AsyncClient(base_url=services["SCRIBE_CDN_URL"], timeout=10)
    http = httpx.AsyncClient()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers(kafka_url), acks="all")
    last: dict[TopicPartition, int] = {}

    async def send(event: CacheInvalidation) -> None:
        sent = await producer.send_and_wait(
            CACHE_INVALIDATIONS.name, encode(event), key=CACHE_INVALIDATIONS.key_of(event)
        )
        tp = TopicPartition(sent.topic, sent.partition)
        last[tp] = max(last.get(tp, -1), sent.offset)

    async def flow_healthy() -> bool:
        return bool((await _invalidation_health(http, worker))["status"] == "healthy")

    await producer.start()
    try:
        assert await eventually(flow_healthy, timeout=120), worker.log_tail()
        test_started = time.monotonic()

        # All at once, then the outage at once: the window that holds them is still being
        # gathered when the CDN goes down.
        await asyncio.gather(*(send(_event(marker, "before", i)) for i in range(BEFORE)))
        outage_from = time.time()
        fault = {"provider": "*", "status": 503, "seconds": OUTAGE_SECONDS}
        assert (await cdn.post("/_sim/faults", json=fault)).status_code == 200
        outage_until = outage_from + OUTAGE_SECONDS  # the fault ends no earlier than this

        # During the outage: invalidations keep coming, and /health is read every few seconds.
        health_seen: list[dict[str, Any]] = []
        for i in range(DURING):
            await send(_event(marker, "during", i))
            await asyncio.sleep((OUTAGE_SECONDS - 20) / DURING)
            if i >= 3 and i % 3 == 0:
                health_seen.append(await _invalidation_health(http, worker))
        await asyncio.sleep(max(0.0, outage_until - 2 - time.time()))
        health_seen.append(await _invalidation_health(http, worker))
        assert time.time() < outage_until, "the outage ran out before it was checked"
        left = _degraded_throughout(health_seen)
        assert [p for p in await _purges(cdn, marker) if p["at"] >= outage_from + 1] == []
        expected = {f"{marker}/{phase}/{i}" for phase, i in _issued()}

        async def all_purged() -> bool:
            counts = _per_provider(await _purges(cdn, marker))
            return all(set(c) >= expected for c in counts.values()) and len(counts) == 2

        assert await eventually(all_purged, timeout=120, interval=0.5), worker.log_tail()
        recovered_after = time.time() - outage_until
        # Long enough for a second purge of anything to show.
        await asyncio.sleep(10)
        purges = await _purges(cdn, marker)
        _each_purged_once(purges, expected)
        before_after_outage = _before_after(purges, outage_until)

        for flow in (INVALIDATION, CDN_INVALIDATION):
            assert await committed_through(
                kafka_url, flow.group_of(worker.app_id), last, timeout=60
            ), worker.log_tail()
        assert await _dead_letters(kafka_url, marker) == []
        assert await eventually(flow_healthy, timeout=30)
        assert worker.alive()
        print(
            f"\ncdn outage {OUTAGE_SECONDS:.0f} s: {BEFORE + DURING} invalidations, each purged "
            f"once at both providers ({before_after_outage} of the {2 * BEFORE} 'before' purges "
            f"after the outage), the last {recovered_after:.1f} s after it ended; "
            f"{len(health_seen)} /health reads all degraded, {left[-1]:.0f} s of the deadline "
            f"left at the end; none dead-lettered; {time.monotonic() - test_started:.0f} s"
        )
    finally:
        await producer.stop()
        await cdn.delete("/_sim/faults")
        await cdn.aclose()
        await http.aclose()


def _degraded_throughout(health_seen: list[dict[str, Any]]) -> list[float]:
    """Each /health read named the CDN and the time left; the seconds left, in order."""
    for seen in health_seen:
        assert seen["status"] == "degraded", seen
        assert seen["overall_status"] == "degraded", seen
        assert "CDN purges failing" in seen["reason"], seen
        assert "left until the retry deadline" in seen["reason"], seen
        assert "503" in seen["reason"], seen
        # The CDN flow's partitions are paused; the Redis flow's (a group of its own) are not.
        assert seen["details"]["cdn_paused"] is True, seen
        assert seen["details"]["paused"] is False, seen
        assert 0 < seen["details"]["cdn_seconds_until_deadline"] <= DEFAULT_DEADLINE_S
    left: list[float] = [s["details"]["cdn_seconds_until_deadline"] for s in health_seen]
    assert left == sorted(left, reverse=True), left
    # Counted from the first failure, early in the outage: about 12 minutes left at its end.
    assert DEFAULT_DEADLINE_S - OUTAGE_SECONDS - 30 < left[-1] < DEFAULT_DEADLINE_S
    return left


def _issued() -> list[tuple[str, int]]:
    return [("before", i) for i in range(BEFORE)] + [("during", i) for i in range(DURING)]


def _before_after(purges: list[dict[str, Any]], outage_until: float) -> int:
    """Checks that every purge of what was issued during the outage came after it; how many of
    the ones issued before it did too (those the outage caught before they reached the CDN; the
    others were purged before it began, and not again)."""
    during = [p for p in purges if "/during/" in p["target"]]
    assert len(during) == 2 * DURING
    assert all(p["at"] >= outage_until - 1 for p in during)
    caught = sum(1 for p in purges if "/before/" in p["target"] and p["at"] >= outage_until - 1)
    assert caught > 0, "the outage caught no purge issued before it"
    return caught


def _each_purged_once(purges: list[dict[str, Any]], expected: set[str]) -> None:
    for provider, counts in _per_provider(purges).items():
        twice = {target: n for target, n in counts.items() if n != 1}
        assert twice == {}, f"{provider} purged these more than once: {twice}"
        assert set(counts) == expected, provider


async def _dead_letters(kafka_url: str, marker: str) -> list[Any]:
    return await read_until(
        kafka_url,
        CACHE_INVALIDATIONS.dlq_name,
        done=lambda _: False,
        match=lambda r: r.value is not None and marker.encode() in r.value,
        timeout=5,
    )


async def _purges(cdn: httpx.AsyncClient, marker: str) -> list[dict[str, Any]]:
    response = await cdn.get("/_sim/purges", params={"contains": marker})
    response.raise_for_status()
    purges: list[dict[str, Any]] = response.json()["purges"]
    return purges


def _per_provider(purges: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """Purges per provider and target, the target without its scheme (Fastly's URL purge has
    none)."""
    counts: dict[str, Counter[str]] = {}
    for purge in purges:
        target = purge["target"].removeprefix("https://").removeprefix("cdn.example/")
        counts.setdefault(purge["provider"], Counter())[target] += 1
    return counts
