"""usage.events -> the usage ledger and rollups in PostgreSQL, in batches."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import faust

from agents.intake import Received, decoded_batches
from schemas.events import UsageEvent
from scribe.metrics import PROCESSING_SECONDS, SINK_BATCH_SIZE, observe_end_to_end
from scribe.resources import Resources
from sinks.postgres.usage import RETRYABLE, UsageLedger
from sinks.retry import until_written
from topics.catalog import USAGE_EVENTS


def register(app: faust.App, resources: Resources) -> None:
    @app.agent(resources.topic(USAGE_EVENTS), name="usage")
    async def aggregate_usage(stream: Any) -> None:
        ledger = UsageLedger(await resources.database())
        async for batch in decoded_batches(
            stream, USAGE_EVENTS, UsageEvent, resources.dead_letters, max_batch=2000
        ):
            with PROCESSING_SECONDS.labels(agent="usage").time():
                priced = await _price_or_dead_letter(batch, resources)
                if priced:
                    SINK_BATCH_SIZE.labels(sink="postgres.usage").observe(len(priced))
                    await until_written("postgres.usage", ledger.write, priced, retryable=RETRYABLE)
                    observe_end_to_end(
                        "usage", "postgres.usage", (e.occurred_at for e, _ in priced)
                    )


async def _price_or_dead_letter(
    batch: list[Received[UsageEvent]], resources: Resources
) -> list[tuple[UsageEvent, Decimal]]:
    priced = []
    for item in batch:
        if item.event.cost_usd is None:
            await resources.dead_letters.send(
                USAGE_EVENTS,
                item.origin,
                "unpriced",
                f"no cost_usd and no price known for model {item.event.model!r}",
            )
            continue
        priced.append((item.event, item.event.cost_usd))
    return priced
