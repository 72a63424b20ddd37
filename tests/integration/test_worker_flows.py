"""`SCRIBE_WORKER_FLOWS`: a worker hosts only the flows it is told to, e.g. a router-only
worker beside workers for the batch flows."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devkit.harness import new_worker, read_until
from devkit.stack import LocalStack
from runtime.settings import kafka_bootstrap_servers
from schemas import decode
from schemas.events import AIRequest, AIResponse, ResponseStatus
from schemas.examples import example
from topics.publisher import Publisher

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
        # The CDN flow and cache warming are the invalidation flow's; the router's and the
        # world's groups are not joined at all.
        flows = ("usage", "invalidation", "invalidation-cdn", "cache-warming")
        expected = {f"{worker.app_id}.{flow}" for flow in flows}
        assert joined(worker.url, expected)
    finally:
        worker.stop()


def joined(worker_url: str, expected: set[str], timeout: float = 60) -> bool:
    """Whether the worker's groups, as its lag metrics name them, come to be `expected`."""
    deadline = time.monotonic() + timeout
    groups = lagging_groups(worker_url)
    while groups != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        groups = lagging_groups(worker_url)
    assert groups == expected  # names the groups when they differ
    return True


def test_decide_and_the_lanes_run_in_workers_of_their_own(tmp_path: Path) -> None:
    """`router-decide` and `router-lanes` split the router: a request decided in one worker is
    executed in the other and answered. A stack of its own: a new group reads ai.requests from
    its start, and the shared stack's holds every other test's requests."""
    with LocalStack(tmp_path / "stack").running() as stack:
        app_id = f"scribe-split-{uuid.uuid4().hex[:8]}"
        deciding = new_worker(
            stack | {"SCRIBE_WORKER_FLOWS": "router-decide"}, tmp_path / "decide", app_id
        )
        executing = new_worker(
            stack | {"SCRIBE_WORKER_FLOWS": "router-lanes"}, tmp_path / "lanes", app_id
        )
        try:
            for worker in (deciding, executing):
                worker.start()
                worker.wait_consuming()
            assert joined(deciding.url, {f"{app_id}.router-{f}" for f in ("decide", "settle")})
            lanes = ("held", "urgent", "normal", "deferred")
            assert joined(executing.url, {f"{app_id}.router-{lane}" for lane in lanes})
            request = example(AIRequest, kind="text", priority="urgent", prompt="Say hello")
            answers = asyncio.run(answered(stack["SCRIBE_KAFKA_URL"], request))
            assert [a.status for a in answers] == [ResponseStatus.OK]
            assert answers[0].output
        finally:
            executing.stop()
            deciding.stop()


async def answered(kafka_url: str, request: AIRequest) -> list[AIResponse]:
    async with Publisher(kafka_bootstrap_servers(kafka_url)) as publisher:
        await publisher.publish(request)
    records = await read_until(
        kafka_url,
        "ai.responses",
        done=lambda kept: len(kept) >= 1,
        match=lambda r: (
            r.key == request.user_id.encode()
            and decode(r.value or b"", AIResponse).request_id == request.request_id
        ),
        timeout=60,
    )
    return [decode(r.value or b"", AIResponse) for r in records]
