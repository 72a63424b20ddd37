"""A worker that hosts decide and the lanes runs urgent and normal requests as soon as they
are decided (agents.router.express): each is answered once, with one provider call, and its
lane message is still written (what a crash falls back on)."""

from __future__ import annotations

import pytest

from devkit.harness import read_until
from tests.integration.router.conftest import Router, Simulator

pytestmark = pytest.mark.integration


async def test_decided_requests_run_at_once_each_with_one_call(
    router: Router, simulator: Simulator
) -> None:
    before = {
        lane: router.metric("scribe_router_expressed_total", lane=lane) or 0.0
        for lane in ("urgent", "normal")
    }
    tag = router.tag()
    requests = [
        router.request(tag, kind="text", priority=priority, user_id=f"user-{tag}-{n}")
        for n in range(12)
        for priority in ("urgent", "normal")
    ]
    ids = {r.request_id for r in requests}
    await router.publish(*requests)

    answers = await router.responses(ids)
    assert sorted(a.request_id for a in answers) == sorted(ids), router.worker.log_tail()
    assert {a.status.value for a in answers} == {"ok"}
    assert len(simulator.calls(tag)) == len(requests), "one provider call per request"

    on_lanes = []
    for lane in ("urgent", "normal"):
        on_lanes += await read_until(
            router.kafka_url,
            f"ai.lane.{lane}",
            done=lambda kept: len(kept) >= len(requests) // 2,
            match=lambda r: r.value is not None and tag.encode() in r.value,
            timeout=10,
        )
    assert len(on_lanes) == len(requests), "each decision is on its lane all the same"

    # The one worker owns every lane partition, so every request ran as soon as decided.
    expressed = {
        lane: (router.metric("scribe_router_expressed_total", lane=lane) or 0.0) - before[lane]
        for lane in ("urgent", "normal")
    }
    assert expressed == {"urgent": 12.0, "normal": 12.0}
    # The lanes read the messages back and let them go: no late, duplicate answers.
    late = await router.responses(ids, count=len(requests) + 1, timeout=2)
    assert len(late) == len(requests)
