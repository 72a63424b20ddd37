"""The invalidation flow's CDN sink against the CDN simulator (its own instance on loopback) with
an injected clock: while purges fail it pushes back (the runtime pauses the partitions) and
says how long is left; only at the deadline does it dead-letter, with the reason; a client
error is dead-lettered at once; a purge that went through is not sent again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from agents.invalidation.coalesce import Window
from agents.invalidation.delivery import CdnSink
from devkit.stack import cdn_simulator
from devkit.stack.processes import free_port
from runtime.sink import SinkBackpressure
from runtime.testing import DeadLetterList, records
from schemas import encode
from schemas.events import CacheInvalidation
from sinks.cdn import CdnPurger, CdnSettings, Provider, ProviderSettings
from topics.catalog import CACHE_INVALIDATIONS

pytestmark = pytest.mark.integration

DEADLINE_S = 900.0


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def simulator() -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    runner = await cdn_simulator.start("127.0.0.1", port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        await runner.cleanup()


def sink(base_url: str, clock: Clock, dead: DeadLetterList) -> CdnSink:
    settings = CdnSettings(
        tuple(
            ProviderSettings(p, base_url, "secret", "acct", 1000, 1000, concurrency=4)
            for p in (Provider.FASTLY, Provider.CLOUDFLARE)
        ),
        retry_deadline=DEADLINE_S,
        timeout=5,
    )
    return CdnSink(CdnPurger(settings), dead, clock=clock, jitter=lambda: 0.999999)


def window(*urls: str) -> Window:
    events = [
        CacheInvalidation(id=f"i{n}", urls=[url], reason="t", occurred_at=datetime.now(UTC))
        for n, url in enumerate(urls)
    ]
    built = Window()
    for event, record in zip(
        events, records(CACHE_INVALIDATIONS.name, [encode(e) for e in events]), strict=True
    ):
        built.add(event, record)
    return built


async def _ok_purges(simulator: httpx.AsyncClient) -> list[tuple[str, str]]:
    purges = (await simulator.get("/_sim/purges")).json()["purges"]
    return sorted((p["provider"], p["target"]) for p in purges)


async def test_failing_purges_push_back_until_the_deadline_then_are_dead_lettered(
    simulator: httpx.AsyncClient,
) -> None:
    await simulator.post(
        "/_sim/faults", json={"provider": "cloudflare", "status": 503, "count": 10_000}
    )
    clock, dead = Clock(), DeadLetterList()
    cdn = sink(str(simulator.base_url), clock, dead)
    batch = window("https://cdn.example/a")
    waits = []
    try:
        while True:
            try:
                await cdn.write(batch)
                break
            except SinkBackpressure as pushed_back:
                assert dead.letters == [], "dead-lettered before the deadline"
                assert cdn.retrying
                reason, details = cdn.retry_status()
                assert reason.startswith("CDN purges failing (cdn cloudflare: ")
                assert "503" in reason and "left until the retry deadline" in reason
                assert details["cdn_seconds_until_deadline"] == pytest.approx(
                    DEADLINE_S - (clock.now - 10_000.0), abs=0.1
                )
                waits.append(pushed_back.retry_after)
                clock.now += pushed_back.retry_after
    finally:
        await cdn.close()
    # Backoff doubles up to the default 30 s cap, and the last attempt is at the deadline.
    assert waits[:3] == pytest.approx([0.2, 0.4, 0.8])
    assert max(waits) == pytest.approx(30.0)
    assert clock.now == pytest.approx(10_000.0 + DEADLINE_S)
    assert not cdn.retrying
    (letter,) = dead.letters
    assert letter.kind == "undeliverable"
    assert "cdn cloudflare" in letter.reason and "503" in letter.reason
    assert "past the retry deadline (SCRIBE_CDN_RETRY_DEADLINE_S=900)" in letter.reason
    assert "urls: https://cdn.example/a" in letter.reason
    # Fastly took it on the first attempt and was not asked again.
    assert await _ok_purges(simulator) == [("fastly", "cdn.example/a")]


async def test_an_outage_that_ends_before_the_deadline_costs_no_dead_letter(
    simulator: httpx.AsyncClient,
) -> None:
    await simulator.post("/_sim/faults", json={"provider": "*", "status": 503, "count": 20})
    clock, dead = Clock(), DeadLetterList()
    cdn = sink(str(simulator.base_url), clock, dead)
    batch = window("https://cdn.example/a", "https://cdn.example/b")
    pushed = 0
    try:
        while True:
            try:
                await cdn.write(batch)
                break
            except SinkBackpressure as pushed_back:
                pushed += 1
                clock.now += pushed_back.retry_after
    finally:
        await cdn.close()
    assert pushed >= 5
    assert dead.letters == []
    assert not cdn.retrying
    assert await _ok_purges(simulator) == [
        ("cloudflare", "https://cdn.example/a"),
        ("cloudflare", "https://cdn.example/b"),
        ("fastly", "cdn.example/a"),
        ("fastly", "cdn.example/b"),
    ]


async def test_a_client_error_is_dead_lettered_at_once(simulator: httpx.AsyncClient) -> None:
    await simulator.post("/_sim/faults", json={"provider": "fastly", "status": 403, "count": 1})
    clock, dead = Clock(), DeadLetterList()
    cdn = sink(str(simulator.base_url), clock, dead)
    try:
        await cdn.write(window("https://cdn.example/a"))
    finally:
        await cdn.close()
    (letter,) = dead.letters
    assert "cdn fastly" in letter.reason and "403" in letter.reason
    assert "a client error, not retried" in letter.reason
    assert not cdn.retrying
