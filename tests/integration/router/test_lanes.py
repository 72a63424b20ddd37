"""With 10,000 background requests queued (published right before, and held back from decide
outside the off-peak window), an urgent request is answered at once; a background request whose
deadline is near is promoted and answered too; the rest stay queued. The latency is printed
here and measured by bench/router.py; this test asserts the order of events, not a timing."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from devkit.harness import ArrivalWatch
from tests.integration.router.conftest import APP_ID, LANES, Router, Simulator, request_id_of

pytestmark = pytest.mark.integration

BACKLOG = 10_000


async def held(router: Router) -> int:
    value = await asyncio.to_thread(router.metric, "scribe_router_lane_held_requests", lane="held")
    return int(value or 0)


async def test_urgent_is_answered_while_10000_background_requests_wait(
    router: Router, simulator: Simulator
) -> None:
    tag = router.tag()
    before = await held(router)
    background = [
        router.request(tag, user_id=f"bg-{tag}-{n % 200}", priority="background", kind="text")
        for n in range(BACKLOG)
    ]
    near = router.request(
        tag, priority="background", kind="text", deadline=datetime.now(UTC) + timedelta(seconds=10)
    )
    urgent = router.request(tag, priority="urgent", kind="text")
    async with ArrivalWatch(router.kafka_url, "ai.responses", request_id_of) as watch:
        started = time.monotonic()
        await router.publish(*background, near, urgent)
        published = time.monotonic()
        answered = await watch.arrival(urgent.request_id)
        await watch.arrival(near.request_id)
    print(
        f"\nurgent answered {1000 * (answered - published):.0f} ms after its publish was "
        f"acknowledged behind {BACKLOG:,} background requests "
        f"({1000 * (answered - started):.0f} ms counting the publishing of all of them)"
    )
    deadline = time.monotonic() + 120
    while (now_held := await held(router)) < before + BACKLOG:
        assert time.monotonic() < deadline, f"only {now_held - before} held"
        await asyncio.sleep(0.25)

    [urgent_answer] = await router.responses({urgent.request_id})
    [near_answer] = await router.responses({near.request_id})
    assert urgent_answer.status.value == "ok" and near_answer.status.value == "ok"
    assert len(simulator.calls(tag)) == 2, "only the urgent and the promoted request ran"


async def test_each_lane_group_reports_its_lag(router: Router) -> None:
    """The lanes are hosted like the other flows: their groups are sampled for lag."""
    deadline = time.monotonic() + 30
    for lane in LANES:
        group = f"{APP_ID}.router-{lane}"
        while (
            await asyncio.to_thread(router.metric, "scribe_consumer_lag_messages", group=group)
        ) is None:
            assert time.monotonic() < deadline, f"no lag sampled for {group}"
            await asyncio.sleep(0.5)
