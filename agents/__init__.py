"""One module or small package per flow; each exposes `register(app, resources)`."""

from __future__ import annotations

import faust

from scribe.resources import Resources


def register_all(app: faust.App, resources: Resources) -> None:
    from agents.invalidation import agent as invalidation
    from agents.router import agent as router
    from agents.usage import agent as usage
    from agents.world import agent as world

    for flow in (router, usage, world, invalidation):
        flow.register(app, resources)
