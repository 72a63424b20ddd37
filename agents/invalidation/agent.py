"""cache.invalidations -> Redis (exact keys)."""

from __future__ import annotations

from typing import Any

import faust

from agents.intake import decoded_batches
from schemas.events import CacheInvalidation
from scribe.metrics import (
    COALESCED_TARGETS,
    INVALIDATIONS,
    PROCESSING_SECONDS,
    SINK_BATCH_SIZE,
    observe_end_to_end,
)
from scribe.resources import Resources
from sinks.redis import RETRYABLE, RedisInvalidator
from sinks.retry import until_written
from topics.catalog import CACHE_INVALIDATIONS


def register(app: faust.App, resources: Resources) -> None:
    invalidator = RedisInvalidator(resources.redis)

    @app.agent(resources.topic(CACHE_INVALIDATIONS), name="invalidation")
    async def fan_out_invalidations(stream: Any) -> None:
        async for batch in decoded_batches(
            stream, CACHE_INVALIDATIONS, CacheInvalidation, resources.dead_letters
        ):
            with PROCESSING_SECONDS.labels(agent="invalidation").time():
                keys = [key for item in batch for key in item.event.keys]
                unique_keys = list(dict.fromkeys(keys))
                COALESCED_TARGETS.labels(stage="received").inc(len(keys))
                COALESCED_TARGETS.labels(stage="emitted").inc(len(unique_keys))
                SINK_BATCH_SIZE.labels(sink="redis").observe(len(unique_keys))
                await until_written(
                    "redis", invalidator.unlink_keys, unique_keys, retryable=RETRYABLE
                )
                INVALIDATIONS.labels(sink="redis", kind="key").inc(len(unique_keys))
                observe_end_to_end("invalidation", "redis", (i.event.occurred_at for i in batch))
