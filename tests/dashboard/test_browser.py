"""A real headless Chromium opens the worker's /dashboard while load runs: the page loads, goes
live over SSE, its figures move, panels nothing feeds say so, the console stays clean, and a
screenshot is left under .scribe/screenshots/."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaProducer
from selenium import webdriver
from selenium.webdriver.common.by import By

from devkit.harness import WorkerProcess
from runtime.settings import kafka_bootstrap_servers
from schemas import encode
from schemas.events import CacheInvalidation, Event, UsageEvent, WorldEvent
from schemas.examples import example
from topics.catalog import USAGE_EVENTS, topic_for

pytestmark = pytest.mark.dashboard

EVENTS_PER_SECOND = 150
T = TypeVar("T")


def _event(rng: random.Random, run: str) -> Event:
    now = datetime.now(UTC)
    roll = rng.random()
    if roll < 0.6:
        return example(
            UsageEvent,
            user_id=f"dash-{run}-{rng.randint(1, 20)}",
            cost_usd=Decimal(rng.randint(1, 200_000)).scaleb(-9),
            occurred_at=now,
        )
    if roll < 0.8:
        key = f"world:dash-{run}-{rng.randint(1, 5)}"
        return example(CacheInvalidation, keys=[key, key, f"{key}:npc:1"], occurred_at=now)
    return example(WorldEvent, world_id=f"dash-{run}", occurred_at=now)


async def _publish(kafka_url: str, stop: threading.Event, sent: list[int]) -> None:
    rng = random.Random(11)
    run = uuid.uuid4().hex[:6]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers(kafka_url), linger_ms=5)
    await producer.start()
    try:
        started = time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - started) * EVENTS_PER_SECOND)
            while sent[0] < due:
                sent[0] += 1
                if sent[0] % 100 == 0:  # some bad input, for the dead-letter figures
                    await producer.send(USAGE_EVENTS.name, b'{"broken": ', key=b"dash-bad")
                    continue
                event = _event(rng, run)
                spec = topic_for(event)
                await producer.send(spec.name, encode(event), key=spec.key_of(event))
            await asyncio.sleep(0.02)
        await producer.flush()
    finally:
        await producer.stop()


@contextmanager
def background_load(kafka_url: str) -> Iterator[list[int]]:
    """Publishes a mixed load from a thread until the block ends; yields the count sent."""
    stop = threading.Event()
    sent = [0]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_publish(kafka_url, stop, sent))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="dashboard-load", daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join(30)
    assert not errors, f"the load generator failed: {errors[0]!r}"


def _until(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        assert time.monotonic() < deadline, f"not reached within {timeout:.0f} s: {what}"
        time.sleep(0.25)


def _text(driver: webdriver.Chrome, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def _number(driver: webdriver.Chrome, element_id: str) -> float | None:
    raw = _text(driver, f"#{element_id}").replace(",", "").replace("$", "").strip()
    try:
        return float(raw)
    except ValueError:
        return None  # still a dash: no frame yet


def _positive(driver: webdriver.Chrome, element_id: str) -> Callable[[], float | None]:
    def probe() -> float | None:
        value = _number(driver, element_id)
        return value if value is not None and value > 0 else None

    return probe


def _panel(driver: webdriver.Chrome, name: str) -> str:
    return _text(driver, f'section[data-panel="{name}"] .body')


@pytest.mark.timeout(900)  # the first run on a fresh machine installs chromium first
def test_dashboard_shows_live_figures_while_load_runs(
    browser: webdriver.Chrome,
    worker: WorkerProcess,
    kafka_url: str,
    screenshot_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with background_load(kafka_url) as sent:
        browser.get(f"{worker.url}/dashboard")
        assert browser.title == "Scribe pipeline · live"
        _until("the stream is live", lambda: _text(browser, "#conn") == "live" or None)

        first_total = _until("messages counted", _positive(browser, "total-in"))
        _until("a non-zero input rate", _positive(browser, "kpi-in"))
        _until("cost today from the ledger", _positive(browser, "kpi-cost-today"))
        _until("a projected month", _positive(browser, "kpi-cost-projected"))
        later_total = _until(
            "the total to grow",
            lambda: t if (t := _number(browser, "total-in")) and t > first_total else None,
        )
        assert later_total > first_total
        _until("dead letters counted", _positive(browser, "kpi-dlq"))
        _until(
            "the usage flow's end-to-end latency",
            lambda: "usage → postgres.usage (end to end)" in _panel(browser, "latency") or None,
        )
        _until("consumer lag sampled", lambda: _number(browser, "kpi-lag"))
        _until(
            "an invalidation latency", lambda: "redis" in _panel(browser, "invalidation") or None
        )
        _until("health checked", lambda: _text(browser, "#overall") == "health: healthy" or None)

        latency = _panel(browser, "latency")
        assert "ms" in latency or " s" in latency, latency
        # Nothing on this branch feeds these yet: the page says so instead of showing zeros.
        for panel in ("routing", "breakers"):
            assert _panel(browser, panel) == "no data yet", panel
        # The world flow ticks the worlds the load's world events created.
        _until("world ticks", lambda: "ticks / s" in _panel(browser, "world") or None)

        screenshot = screenshot_dir / "dashboard.png"
        assert browser.save_screenshot(str(screenshot))
        with capsys.disabled():
            print(f"\ndashboard screenshot ({sent[0]} events published): {screenshot}")

    console: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
    severe = [entry for entry in console if entry["level"] == "SEVERE"]
    assert not severe, severe
