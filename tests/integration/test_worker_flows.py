"""`SCRIBE_WORKER_FLOWS`: a worker hosts only the flows it is told to, e.g. a router-only
worker beside workers for the batch flows."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devkit.harness import new_worker

pytestmark = pytest.mark.integration


def lagging_groups(worker_url: str) -> set[str]:
    text = httpx.get(f"{worker_url}/metrics", timeout=10).text
    return {
        sample.labels["group"]
        for family in text_string_to_metric_families(text)
        if family.name == "scribe_consumer_lag_messages"
        for sample in family.samples
    }


def test_a_worker_hosts_only_the_flows_it_names(services: dict[str, str], state_dir: Path) -> None:
    env = services | {"SCRIBE_WORKER_FLOWS": "usage, invalidation"}
    worker = new_worker(env, state_dir / "flow-workers").start()
    try:
        # Cache warming is the invalidation flow's; the router's and the world's groups are not
        # joined at all.
        expected = {
            f"{worker.app_id}.{flow}" for flow in ("usage", "invalidation", "cache-warming")
        }
        deadline = time.monotonic() + 60
        groups = lagging_groups(worker.url)
        while groups != expected and time.monotonic() < deadline:
            time.sleep(0.5)
            groups = lagging_groups(worker.url)
        assert groups == expected
    finally:
        worker.stop()
