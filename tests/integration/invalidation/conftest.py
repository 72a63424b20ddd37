"""Fixtures of the invalidation flow's integration tests: the CDN simulator the shared worker
purges at, and the flow's consumer group."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from agents.invalidation.flow import INVALIDATION
from devkit.harness import WorkerProcess


@pytest.fixture
def cdn_url(services: dict[str, str]) -> str:
    url = services.get("SCRIBE_CDN_URL")
    if not url:
        pytest.skip("needs the CDN simulator: the embedded stack, or SCRIBE_CDN_URL")
    return url


@pytest.fixture
async def cdn(cdn_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cdn_url, timeout=10) as client:
        try:
            yield client
        finally:
            await client.delete("/_sim/faults")


@pytest.fixture
def group(worker: WorkerProcess) -> str:
    return INVALIDATION.group_of(worker.app_id)


@dataclass(frozen=True)
class Pipeline:
    """The running pipeline as these tests see it."""

    kafka_url: str
    redis_url: str
    worker: WorkerProcess
    group: str
    cdn: httpx.AsyncClient


@pytest.fixture
def pipeline(
    services: dict[str, str],
    kafka_url: str,
    worker: WorkerProcess,
    group: str,
    cdn: httpx.AsyncClient,
) -> Pipeline:
    return Pipeline(kafka_url, services["SCRIBE_REDIS_URL"], worker, group, cdn)
