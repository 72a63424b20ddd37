"""A user's 1,001st image request of a UTC day does not go to the free tier, with two workers
deciding that user's requests at once: the requests are spread over every partition of
ai.requests, so both workers decide some, and the counter they share in Redis stays exact."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from devkit.harness import WorkerProcess
from schemas import encode
from schemas.events import AIRequest
from tests.integration.router.conftest import Router, router_worker_process, wait_for_lanes
from topics.catalog import AI_REQUESTS

pytestmark = pytest.mark.integration

FREE_PER_DAY = 1000
PARTITIONS = 4
FREE_IMAGE = "google/gemini-2.5-flash-image-preview:free"


def one_key_per_partition(tag: str) -> list[bytes]:
    """Record keys that land on each of the partitions."""
    partitioner = DefaultPartitioner()
    keys: dict[int, bytes] = {}
    while len(keys) < PARTITIONS:
        key = f"spread-{tag}-{uuid.uuid4().hex[:6]}".encode()
        keys.setdefault(partitioner(key, list(range(PARTITIONS)), list(range(PARTITIONS))), key)
    return [keys[p] for p in range(PARTITIONS)]


async def round_trip(router: Router, keys: list[bytes], users: list[str]) -> None:
    """Every partition is owned and answering (after a rebalance)."""
    tag = router.tag()
    probes = [router.request(tag, user_id=u, kind="text") for u in users]
    await router.publisher.publish_raw(
        (AI_REQUESTS.name, key, encode(p)) for key, p in zip(keys, probes, strict=True)
    )
    ids = {p.request_id for p in probes}
    # A rebalance may deliver a request twice; the second delivery gets the same answer again.
    assert {a.request_id for a in await router.responses(ids)} == ids


async def test_the_1001st_image_of_the_day_is_not_free_with_two_workers(
    router: Router,
    router_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    second = router_worker_process(router_env, tmp_path_factory.mktemp("second-worker"))
    tag = router.tag()
    keys = one_key_per_partition(tag)
    probes = [f"probe-{tag}-{n}" for n in range(PARTITIONS)]
    try:
        second.start()
        wait_for_lanes(second)
        await round_trip(router, keys, probes)
        users = [f"quota-{tag}-{n}" for n in range(2)]
        requests: dict[str, list[AIRequest]] = {
            user: [
                router.request(
                    tag,
                    user_id=user,
                    kind="image",
                    priority="urgent",
                    prompt=f"{user} #{n} [tag:{tag}]",
                )
                for n in range(1, FREE_PER_DAY + 2)
            ]
            for user in users
        }
        started = time.monotonic()
        # Each user's requests round-robin over the partitions: both workers decide each user.
        await router.publisher.publish_raw(
            (AI_REQUESTS.name, keys[n % PARTITIONS], encode(r))
            for batch in requests.values()
            for n, r in enumerate(batch)
        )
        ids = {r.request_id for batch in requests.values() for r in batch}
        answers = {a.request_id: a for a in await router.responses(ids, timeout=180)}
        assert len(answers) == len(ids), router.worker.log_tail()
        print(
            f"{len(ids)} image requests answered by two workers in "
            f"{time.monotonic() - started:.1f} s"
        )

        for user, batch in requests.items():
            # Decided by two workers at once, in no one order: which one is paid varies.
            answered = [answers[r.request_id] for r in batch]
            assert all(a.status.value == "ok" for a in answered), user
            free = [a for a in answered if a.free_tier]
            assert len(free) == FREE_PER_DAY, user
            assert {a.model for a in free} == {FREE_IMAGE}
            [last] = [a for a in answered if not a.free_tier]
            assert last.provider == "gemini" and last.model == "gemini-2.5-flash-image"
            assert last.rationale and "free images used up (1000/1000 today)" in last.rationale
            assert last.image_url is not None
            async with httpx.AsyncClient() as client:
                image = await client.get(last.image_url, timeout=10)
            assert image.status_code == 200 and image.content.startswith(b"\x89PNG")

            usage = await router.usage(user, count=FREE_PER_DAY + 1)
            assert len({u.event_id for u in usage}) == FREE_PER_DAY + 1
            assert Counter(u.free_tier for u in usage) == {True: FREE_PER_DAY, False: 1}

        for worker in (router.worker, second):
            routed = sum(
                _metric(router, worker, "scribe_routing_decisions_total", route=route)
                for route in ("free", "paid")
            )
            assert routed > 0, f"worker {worker.web_port} decided nothing"
    finally:
        second.stop()
        await round_trip(router, keys, probes)  # the first worker owns everything again


def _metric(router: Router, worker: WorkerProcess, name: str, **labels: str) -> float:
    own = Router(router.kafka_url, router.publisher, worker)
    total = 0.0
    for lane in ("urgent", "normal", "deferred"):
        total += own.metric(name, lane=lane, **labels) or 0.0
    return total
