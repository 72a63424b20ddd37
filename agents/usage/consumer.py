"""usage.events -> the ledger, rollups and budgets in PostgreSQL: a batch consumer run as a
service of the Faust worker.

Faust's per-event stream machinery caps a Table agent at a few thousand events/s (the
`peer.faust_table` case of `bench/README.md` measures it side by side); this loop takes
`getmany()` batches from a plain aiokafka consumer, writes each batch in one transaction and
commits the batch's offsets only after that transaction committed. Its consumer group is
`<app id>-usage` (see `agents/batch_consumer.py`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar

import asyncpg
import mode
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from agents.batch_consumer import BatchConsumerService
from agents.context import Resources
from agents.usage.outbox import publish_outbox, show_alert_thresholds
from agents.usage.pricing import Priced, UsageLimits, price_usage
from runtime import kafka
from runtime.metrics import (
    COST,
    MESSAGES_IN,
    PROCESSING_SECONDS,
    SINK_BATCH_SIZE,
    SINK_ERRORS,
    USAGE_EVENTS_COUNTED,
    observe_end_to_end,
)
from schemas import DecodeError, decode
from schemas.events import UsageEvent
from schemas.model_catalog import load_catalog
from sinks.postgres.budgets import BudgetStore
from sinks.postgres.usage import (
    RETRYABLE,
    LedgerWrite,
    PricedUsage,
    UsageLedger,
    months_ahead,
    retention_cutoff,
)
from sinks.retry import until_written
from topics.catalog import USAGE_EVENTS
from topics.dlq import Origin
from topics.publisher import RawRecord

log = logging.getLogger(__name__)

AGENT = "usage"  # the `agent` label of this flow's metrics
SINK = "postgres.usage"
# A rollup row that many events of a batch touch is upserted once per batch: at 10,000 events
# (vs 5,000) PostgreSQL alone stored ~10-15 % more events/s with 1,000 live users.
MAX_BATCH = 10_000
# A full garbage collection after this many generation-1 collections (Python's default: 10).
FULL_COLLECTION_EVERY = 100
PREPARE_CHUNK = 250  # events decoded between two turns of the event loop (a few ms of CPU)
POLL_TIMEOUT_MS = 500
OUTBOX_SWEEP_S = 5.0
RECONCILE_S = 60.0
FIRST_PAUSE_S = 0.5
MAX_PAUSE_S = 10.0
MAINTENANCE_S = 3600.0
MONTHS_AHEAD = 2

# PostgreSQL refused the data itself: retrying cannot help, so the batch is split until the
# event at fault is found and dead-lettered.
REFUSED = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)

T = TypeVar("T")
Message: TypeAlias = ConsumerRecord[bytes, bytes]


def usage_group_id(app_id: str) -> str:
    return f"{app_id}-usage"


async def write_isolating(
    items: Sequence[T],
    write: Callable[[Sequence[T]], Awaitable[LedgerWrite]],
    refused: tuple[type[BaseException], ...],
    dead_letter: Callable[[T, BaseException], Awaitable[None]],
) -> LedgerWrite:
    """Write `items`; when the sink refuses the batch, bisect it so that only the items it
    refuses on their own are dead-lettered and every other item is written."""
    try:
        return await write(items)
    except refused as error:
        if len(items) == 1:
            await dead_letter(items[0], error)
            return LedgerWrite(0, 0, 0)
    middle = len(items) // 2
    first = await write_isolating(items[:middle], write, refused, dead_letter)
    return first + await write_isolating(items[middle:], write, refused, dead_letter)


def origin_of(message: Message) -> Origin:
    return Origin(message.topic, message.partition, message.offset, message.key, message.value)


@dataclass(frozen=True)
class PreparedBatch:
    priced: list[tuple[Message, PricedUsage]]
    offsets: dict[TopicPartition, int]  # to commit once `priced` is stored


class UsageBatchConsumer(BatchConsumerService):
    """Owns its consumer and its PostgreSQL pool, so the app closing shared resources at
    shutdown never cuts a batch in half."""

    flow = AGENT

    def __init__(self, resources: Resources, **kwargs: Any) -> None:
        super().__init__(resources, **kwargs)
        self.usage = resources.settings.base.usage
        self.limits = UsageLimits(max_tokens_per_event=self.usage.max_tokens_per_event)
        self.catalog = load_catalog()
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "used before on_start"
        return self._pool

    async def on_start(self) -> None:
        settings = self.resources.settings
        self._pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=1,
            max_size=3,
            **settings.base.security.postgres.asyncpg_kwargs(),
        )
        self.ledger = UsageLedger(self.pool, self.usage.alert_thresholds_pct)
        show_alert_thresholds(self.usage.alert_thresholds_pct)
        self.budgets = BudgetStore(self.pool)
        await self._maintain_partitions()
        group_id = usage_group_id(settings.base.app_id)
        consumer = kafka.consumer(settings, group_id, USAGE_EVENTS.name)
        await self.start_consumer(consumer, group_id, [USAGE_EVENTS.name])

    async def on_started(self) -> None:
        # Measured on a 100,000-event run whose batches took ~4 s of this worker's CPU: 1.5 s
        # in the garbage collector before, ~0.3 s after. Every object alive once the worker is
        # up (modules, the app, its clients) lives as long as the process: frozen, a full
        # collection no longer walks them (~90 ms each before). And full collections,
        # triggered every ~2 batches by the batches' own objects, walked the batches in
        # flight (~75 ms each at 10,000 events): ten times rarer now.
        gc.freeze()
        gen0, gen1, _ = gc.get_threshold()
        gc.set_threshold(gen0, gen1, FULL_COLLECTION_EVERY)
        await super().on_started()

    async def on_stop(self) -> None:
        await super().on_stop()
        if self._pool is not None:
            await self._pool.close()

    async def consume(self) -> None:
        """Batches until the service stops. When Kafka or PostgreSQL fails under a batch, the
        consumer rewinds to its committed offsets and tries again after a pause: what was
        already stored is recognised by the ledger, so nothing counts twice."""
        pause, rewind = FIRST_PAUSE_S, False
        while not self.should_stop:
            try:
                if rewind:
                    await self._rewind()
                await self._consume_batches()
                return
            except (KafkaError, *RETRYABLE) as error:
                SINK_ERRORS.labels(sink="usage.consumer").inc()
                log.warning("usage: batch failed (%r); rewinding, retry in %.1f s", error, pause)
                await asyncio.sleep(pause)
                pause, rewind = min(pause * 2, MAX_PAUSE_S), True

    async def _consume_batches(self) -> None:
        """Decoding and pricing one batch (CPU here) overlaps with storing the previous one
        (CPU in PostgreSQL); batches are still stored and committed strictly in order."""
        storing: asyncio.Task[None] | None = None
        try:
            while not self.should_stop:
                records = await self.consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_BATCH
                )
                if not records:
                    continue
                batch = await self.prepare(records)
                if storing is not None:
                    await storing
                storing = asyncio.create_task(self.store(batch))
        finally:
            if storing is not None:
                await storing

    async def _rewind(self) -> None:
        for tp in self.consumer.assignment():
            offset = await self.consumer.committed(tp)
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    async def prepare(self, records: dict[TopicPartition, list[Message]]) -> PreparedBatch:
        """Decode and price; what is invalid, unpriced or implausible is in the DLQ on return.

        Works in chunks and yields to the event loop between them: the batch before this one
        is being stored meanwhile, and each of its steps (COPY, the ledger statement, the
        commit) then starts in PostgreSQL while this CPU work goes on. A message's `Origin`
        is made only when it is dead-lettered: the record itself carries the same fields."""
        with PROCESSING_SECONDS.labels(agent=f"{AGENT}.prepare").time():
            messages = [m for batch in records.values() for m in batch]
            MESSAGES_IN.labels(topic=USAGE_EVENTS.name, agent=AGENT).inc(len(messages))
            now = datetime.now(UTC)
            priced: list[tuple[Message, PricedUsage]] = []
            for start in range(0, len(messages), PREPARE_CHUNK):
                for message in messages[start : start + PREPARE_CHUNK]:
                    await self._decode_and_price(message, now, priced)
                await asyncio.sleep(0)
        offsets = {tp: batch[-1].offset + 1 for tp, batch in records.items()}
        return PreparedBatch(priced, offsets)

    async def store(self, batch: PreparedBatch) -> None:
        """Write the batch in one transaction, publish what it made due, then commit."""
        with PROCESSING_SECONDS.labels(agent=f"{AGENT}.store").time():
            if batch.priced:
                SINK_BATCH_SIZE.labels(sink=SINK).observe(len(batch.priced))
                written = await write_isolating(
                    batch.priced, self._write, REFUSED, self._dead_letter_refused
                )
                observe_end_to_end(AGENT, SINK, (p.event.occurred_at for _, p in batch.priced))
                for (service, model), cost in written.cost_by_model.items():
                    COST.labels(service=service, model=model).inc(float(cost))
                USAGE_EVENTS_COUNTED.labels(outcome="counted").inc(written.inserted)
                USAGE_EVENTS_COUNTED.labels(outcome="duplicate").inc(
                    len(batch.priced) - written.inserted
                )
                if written.alerts or written.states:
                    await self.publish_budget_outbox()
            await self.commit(batch.offsets)

    async def _decode_and_price(
        self, message: Message, now: datetime, priced: list[tuple[Message, PricedUsage]]
    ) -> None:
        """Append the priced event to `priced`, or dead-letter the message with the reason."""
        try:
            if message.value is None:
                raise DecodeError("json", "empty message (no value)")
            event = decode(message.value, UsageEvent)
        except DecodeError as error:
            await self.resources.dead_letters.send(
                USAGE_EVENTS, origin_of(message), error.kind, error.reason, agent=AGENT
            )
            return
        outcome = price_usage(event, self.catalog, self.limits, now)
        if isinstance(outcome, Priced):
            priced.append((message, PricedUsage(event, outcome.cost_usd, outcome.catalog_version)))
            return
        await self.resources.dead_letters.send(
            USAGE_EVENTS, origin_of(message), outcome.kind, outcome.reason, agent=AGENT
        )
        USAGE_EVENTS_COUNTED.labels(outcome="refused").inc()

    async def _write(self, items: Sequence[tuple[Message, PricedUsage]]) -> LedgerWrite:
        return await until_written(
            SINK, self.ledger.write, [p for _, p in items], retryable=RETRYABLE
        )

    async def _dead_letter_refused(
        self, item: tuple[Message, PricedUsage], error: BaseException
    ) -> None:
        await self.resources.dead_letters.send(
            USAGE_EVENTS,
            origin_of(item[0]),
            "refused",
            f"PostgreSQL refused the event: {error}",
            AGENT,
        )
        USAGE_EVENTS_COUNTED.labels(outcome="refused").inc()

    async def _send_all(self, records: list[RawRecord]) -> None:
        producer = self.resources.app.producer
        futures = [
            await producer.send(topic, key, value, None, None, None)
            for topic, key, value in records
        ]
        for future in futures:
            await future

    async def publish_budget_outbox(self) -> None:
        """Publish pending alerts and states. A failure leaves them pending in PostgreSQL for
        the next sweep; it never holds up counting."""
        try:
            await publish_outbox(self.budgets, self._send_all, self.usage.alert_thresholds_pct)
        except (KafkaError, *RETRYABLE) as error:
            SINK_ERRORS.labels(sink="kafka.budget").inc()
            log.warning("usage: budget outbox not published yet (%r); will retry", error)

    @mode.Service.timer(OUTBOX_SWEEP_S)
    async def _sweep_outbox(self) -> None:
        """Finishes what a crash, a failed send or `scribe budget set` left pending."""
        await self.publish_budget_outbox()

    @mode.Service.timer(RECONCILE_S)
    async def _reconcile_budgets(self) -> None:
        """A new month resets every budget's state; a budget set while a batch of its user
        was in flight gets the alerts and state that batch would have made due."""
        try:
            if await self.budgets.reconcile(self.usage.alert_thresholds_pct):
                await self.publish_budget_outbox()
        except RETRYABLE as error:
            log.warning("usage: budget reconciliation failed (%r); will retry", error)

    @mode.Service.timer(MAINTENANCE_S)
    async def _maintain(self) -> None:
        try:
            await self._maintain_partitions()
        except RETRYABLE as error:
            log.warning("usage: partition upkeep failed (%r); will retry", error)

    async def _maintain_partitions(self) -> None:
        """The current month and the next two exist ahead of time; with a retention setting,
        older months are detached."""
        today = datetime.now(UTC).date()
        await self.ledger.ensure_months(set(months_ahead(today, MONTHS_AHEAD)))
        if self.usage.retention_months > 0:
            detached = await self.ledger.detach_before(
                retention_cutoff(today, self.usage.retention_months)
            )
            if detached:
                log.info("usage: detached ledger partitions %s", ", ".join(detached))
