"""One module or small package per flow; each exposes `register(app, resources)`."""

from __future__ import annotations

import faust

from agents.context import Resources


def register_all(app: faust.App, resources: Resources) -> None:
    from agents.invalidation import agent as invalidation
    from agents.router import agent as router
    from agents.usage import agent as usage
    from agents.world import agent as world

    for flow in (router, usage, world, invalidation):
        flow.register(app, resources)


def consumer_group(app_id: str, topic: str) -> str:
    """The consumer group that reads `topic` in the workers of `app_id`: Faust's own group,
    except for the firehose flows that run their own batch consumer."""
    from agents.invalidation.consumer import consumer_group as invalidation_group
    from agents.usage.consumer import usage_group_id
    from agents.world.consumer import world_group_id
    from topics.catalog import (
        AI_REQUESTS,
        CACHE_INVALIDATIONS,
        USAGE_EVENTS,
        WORLD_EVENTS,
        WORLD_TICKS,
    )

    own_groups = {
        AI_REQUESTS.name: lambda app: f"{app}-router-intake",  # agents/router/agent.py
        CACHE_INVALIDATIONS.name: invalidation_group,
        USAGE_EVENTS.name: usage_group_id,
        WORLD_EVENTS.name: world_group_id,
        WORLD_TICKS.name: world_group_id,
    }
    return own_groups[topic](app_id) if topic in own_groups else app_id
