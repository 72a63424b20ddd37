"""usage.events -> the exact cost ledger, rollups and budgets in PostgreSQL (`LedgerSink`),
and budget alerts and states to Kafka. Its key is the event id: one ledger row per event, so
re-reading a batch after a crash or a refused commit counts nothing twice."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial

import asyncpg
from aiokafka.errors import KafkaError

from agents.context import Resources
from agents.intake import dead_letter_writer
from agents.usage.outbox import show_alert_thresholds
from agents.usage.pricing import Priced, UsageLimits, price_usage
from agents.usage.store import LedgerSink
from runtime import tracing
from runtime.flow import Flow, Timer
from runtime.metrics import USAGE_EVENTS_COUNTED
from runtime.sink import Sink
from runtime.source import DeadLetterWriter, Received, Record, Rejected
from runtime.spec import ConsumerSpec
from schemas.model_catalog import ModelCatalog, load_catalog
from schemas.usage_wire import DecodeError, Usage, decode_usage
from sinks.postgres.databases import keep_session
from sinks.postgres.usage import RETRYABLE, PricedUsage
from topics.catalog import USAGE_EVENTS
from topics.publisher import RawRecord

# A rollup row that many events of a batch touch is upserted once per batch: at 10,000 events
# (vs 5,000) PostgreSQL alone stored ~10-15 % more events/s with 1,000 live users.
# Kafka may gather a fetch's worth (about 500 events) for up to the fetch wait (500 ms): at
# low rates a fetch per event cost a send and a response to handle per event. Costs, reports
# and budget alerts can trail by that half second; the router enforces quotas and budgets
# from its own ledger in Redis.
USAGE = ConsumerSpec("usage", (USAGE_EVENTS.name,), max_batch=10_000, fetch_min_bytes=256 * 1024)


UsageBatch = list[Received[PricedUsage]]


def priced(
    catalog: ModelCatalog, limits: UsageLimits
) -> Callable[[Record], PricedUsage | Rejected]:
    """Decode and price; invalid, unpriced and implausible events become dead letters."""

    def decode_and_price(record: Record) -> PricedUsage | Rejected:
        if record.value is None:
            return Rejected("json", "empty message (no value)")
        try:
            event: Usage = decode_usage(record.value)
        except DecodeError as error:
            return Rejected(error.kind, error.reason)
        outcome = price_usage(event, catalog, limits, datetime.now(UTC))
        if isinstance(outcome, Priced):
            return PricedUsage(event, outcome.cost_usd, outcome.catalog_version)
        USAGE_EVENTS_COUNTED.labels(outcome="refused").inc()
        return Rejected(outcome.kind, outcome.reason)

    return decode_and_price


def declare(
    ledger: Sink[UsageBatch],
    dead_letter: DeadLetterWriter,
    limits: UsageLimits,
    timers: Sequence[Timer] = (),
) -> Flow[PricedUsage, UsageBatch]:
    return Flow(
        spec=USAGE,
        decode=priced(load_catalog(), limits),
        dead_letter=dead_letter,
        handle=list,
        sinks=[ledger],
        retryable=(KafkaError, *RETRYABLE),
        timers=timers,
        commit_behind=True,
    )


async def build(resources: Resources) -> Flow[PricedUsage, UsageBatch]:
    settings, usage = resources.settings, resources.settings.base.usage

    async def send_all(records: list[RawRecord]) -> None:
        producer = resources.app.producer
        headers = tracing.inject() or None  # the usage batch's span, when there is one
        sent = [await producer.send(t, k, v, None, None, headers) for t, k, v in records]
        for future in sent:
            await future

    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=1,
        max_size=4,
        reset=keep_session,
        **settings.database_options,
    )
    dead_letter = dead_letter_writer(resources.dead_letters, USAGE)
    ledger = LedgerSink(pool, usage.alert_thresholds_pct, send_all, dead_letter)
    show_alert_thresholds(usage.alert_thresholds_pct)
    retention = usage.retention_months
    await ledger.maintain_partitions(retention)
    limits = UsageLimits(max_tokens_per_event=usage.max_tokens_per_event)
    return declare(
        ledger,
        dead_letter,
        limits,
        timers=[
            # Finishes what a crash, a failed send or `scribe budget set` left pending.
            Timer("outbox-sweep", 5.0, ledger.publish_outbox),
            Timer("budget-reconcile", 60.0, ledger.reconcile_budgets),
            Timer("ledger-upkeep", 3600.0, partial(ledger.maintain_partitions, retention)),
        ],
    )
