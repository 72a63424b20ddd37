"""world.events + world.ticks: validated, bad input dead-lettered. The simulation itself (issue
6) is on branch issue-6-world and not merged yet."""

from __future__ import annotations

from typing import Any

import faust

from agents.intake import decoded_batches
from schemas.events import WorldEvent, WorldTick
from scribe.resources import Resources
from topics.catalog import WORLD_EVENTS, WORLD_TICKS


def register(app: faust.App, resources: Resources) -> None:
    @app.agent(resources.topic(WORLD_EVENTS), name="world-events")
    async def apply_world_events(stream: Any) -> None:
        async for _batch in decoded_batches(
            stream, WORLD_EVENTS, WorldEvent, resources.dead_letters
        ):
            pass

    @app.agent(resources.topic(WORLD_TICKS), name="world-ticks")
    async def apply_world_ticks(stream: Any) -> None:
        async for _batch in decoded_batches(stream, WORLD_TICKS, WorldTick, resources.dead_letters):
            pass
