"""Which flows let Kafka gather a fetch's worth of records before answering: only those no
caller waits on. The rest are answered at their first record."""

from __future__ import annotations

from agents.invalidation.flow import INVALIDATION
from agents.router.decide import LANE_TOPICS
from agents.router.decide_flow import DECIDE, SETTLE
from agents.router.lane_consumer import lane_spec
from agents.usage.flow import USAGE
from agents.world.flow import WORLD


def test_settle_and_usage_gather_and_every_flow_a_caller_waits_on_does_not() -> None:
    gathering = {s.flow: s.consumer_options()["fetch_min_bytes"] for s in (SETTLE, USAGE)}
    assert all(min_bytes >= 16 * 1024 for min_bytes in gathering.values()), gathering
    # What they gather is bounded in time: settle within 200 ms, usage within its usual wait.
    assert (SETTLE.fetch_wait_ms, USAGE.fetch_wait_ms) == (200, 500)
    lanes = [lane_spec(lane.value, topic) for lane, topic in LANE_TOPICS.items()]
    for spec in (DECIDE, *lanes, INVALIDATION, WORLD):
        assert spec.consumer_options()["fetch_min_bytes"] == 1, spec.flow
