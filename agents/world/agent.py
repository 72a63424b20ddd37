"""world.events + world.ticks + a tick timer -> per-world state (owned by this worker) ->
PostgreSQL -> cache.invalidations: the world flow, run as a service of the worker."""

from __future__ import annotations

from functools import partial

import faust

from agents.context import Resources
from agents.world import flow


def register(app: faust.App, resources: Resources) -> None:
    app.service(resources.flow_service(flow.WORLD.flow, partial(flow.build, resources)))
