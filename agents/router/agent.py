"""ai.requests -> decide -> execute -> ai.responses + usage.events."""

from __future__ import annotations

from typing import Any

import faust

from agents.intake import decoded_batches
from schemas.events import AIRequest
from scribe.resources import Resources
from topics.catalog import AI_REQUESTS


def register(app: faust.App, resources: Resources) -> None:
    @app.agent(resources.topic(AI_REQUESTS), name="router")
    async def route_requests(stream: Any) -> None:
        async for _batch in decoded_batches(stream, AI_REQUESTS, AIRequest, resources.dead_letters):
            pass
