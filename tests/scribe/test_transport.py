"""The Faust worker's consumer fetches with SCRIBE_FETCH_MAX_WAIT_MS, not Faust's fixed 1.5 s.
No broker: the aiokafka consumer is only built, never started."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from scribe.app import create_app
from scribe.settings import ResolvedSettings, Settings


def settings(tmp_path: Path, fetch_max_wait_ms: int | None = None) -> ResolvedSettings:
    base = Settings(
        kafka_url="kafka://127.0.0.1:9",
        database_url="postgresql://postgres@127.0.0.1:9/postgres",
        redis_url="redis://127.0.0.1:9/0",
        state_dir=tmp_path,
        app_id="transport-test",
    )
    if fetch_max_wait_ms is not None:
        base = replace(base, fetch_max_wait_ms=fetch_max_wait_ms)
    return base.require()


def worker_consumer_fetch_wait(resolved: ResolvedSettings) -> int:
    app, _ = create_app(resolved)
    thread: Any = getattr(app.consumer, "_thread")  # noqa: B009 (Faust's typing hides it)
    consumer = thread._create_worker_consumer(app.transport)
    wait: int = consumer._fetch_max_wait_ms
    return wait


async def test_the_setting_sets_the_worker_consumers_fetch_wait(tmp_path: Path) -> None:
    assert worker_consumer_fetch_wait(settings(tmp_path, fetch_max_wait_ms=50)) == 50


async def test_without_the_setting_faust_keeps_its_own_wait(tmp_path: Path) -> None:
    assert worker_consumer_fetch_wait(settings(tmp_path)) == 1500
