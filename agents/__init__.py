"""One module or small package per flow; each exposes `register(app, resources)`."""

from __future__ import annotations

from typing import TYPE_CHECKING

# Only for the annotations: importing any flow's pure module (a report, a replay) must not load
# Faust, which costs the CLI seconds per command.
if TYPE_CHECKING:
    import faust

    from agents.context import Resources


def register_all(app: faust.App, resources: Resources) -> None:
    """Registers the flows the worker hosts (`SCRIBE_WORKER_FLOWS`, all by default)."""
    from agents.invalidation import agent as invalidation
    from agents.router import agent as router
    from agents.usage import agent as usage
    from agents.world import agent as world

    hosted = resources.settings.base.worker_flows
    deciding = "router" in hosted or "router-decide" in hosted
    executing = "router" in hosted or "router-lanes" in hosted
    if deciding or executing:
        router.register(app, resources, deciding=deciding, executing=executing)
    flows = {"usage": usage, "world": world, "invalidation": invalidation}
    for name in hosted:
        if name in flows:
            flows[name].register(app, resources)


def consumer_group(app_id: str, topic: str) -> str:
    """The consumer group that reads `topic` in the workers of `app_id`: its flow's,
    `<app_id>.<flow>` (for `world.events`, the world flow's, not cache warming's; for
    `cache.invalidations`, the Redis flow's, not the CDN flow's)."""
    from agents.invalidation.flow import INVALIDATION
    from agents.router.decide import LANE_TOPICS
    from agents.router.decide_flow import DECIDE, SETTLE
    from agents.router.lane_consumer import lane_spec
    from agents.usage.flow import USAGE
    from agents.world.flow import WORLD
    from topics.catalog import AI_REQUESTS_HELD

    lanes = [lane_spec(lane.value, topic) for lane, topic in LANE_TOPICS.items()]
    held = lane_spec("held", AI_REQUESTS_HELD)
    for spec in (USAGE, WORLD, INVALIDATION, DECIDE, SETTLE, held, *lanes):
        if topic in spec.topics:
            return spec.group_of(app_id)
    raise ValueError(f"no flow reads {topic!r}")
