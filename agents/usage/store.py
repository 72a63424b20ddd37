"""The usage flow's sink: a batch of priced events into the ledger, rollups and budgets in
one PostgreSQL transaction (one ledger row per event id, so a batch written twice counts once),
then the budget outbox to Kafka. Under load it stages the next batch (its own transaction, not
yet committed) while the one before is written, so PostgreSQL's ledger statements follow each
other without the staging between them. It owns its pool, which the runtime closes after the
flow's loop and timers have ended."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg
from aiokafka.errors import KafkaError
from opentelemetry.trace import SpanKind

from agents.usage.outbox import SendAll, publish_outbox
from runtime import tracing
from runtime.metrics import (
    COST,
    PROCESSING_SECONDS,
    SINK_BATCH_SIZE,
    SINK_ERRORS,
    USAGE_EVENTS_COUNTED,
    observe_end_to_end,
)
from runtime.source import DeadLetterWriter, Received
from sinks.postgres.budgets import BudgetStore
from sinks.postgres.usage import (
    RETRYABLE,
    LedgerWrite,
    PricedUsage,
    StagedBatch,
    UsageLedger,
    months_ahead,
    retention_cutoff,
)
from sinks.retry import until_written

log = logging.getLogger(__name__)

AGENT = "usage"
SINK = "postgres.usage"
MONTHS_AHEAD = 2

# PostgreSQL refused the data itself: retrying cannot help, so the batch is split until the
# event at fault is found and dead-lettered.
REFUSED = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)

T = TypeVar("T")
PricedEvent = Received[PricedUsage]


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


class LedgerSink:
    def __init__(
        self,
        pool: asyncpg.Pool,
        thresholds_pct: Sequence[int],
        send_all: SendAll,
        dead_letter: DeadLetterWriter,
    ) -> None:
        self.pool = pool
        self.ledger = UsageLedger(pool, thresholds_pct)
        self.budgets = BudgetStore(pool)
        self.thresholds_pct = thresholds_pct
        self.send_all = send_all
        self.dead_letter = dead_letter
        # What `prepare` staged, by batch, until that batch's write or `discard` takes it.
        self._staged: list[tuple[list[PricedEvent], StagedBatch]] = []

    async def prepare(self, batch: list[PricedEvent]) -> None:
        """Stage `batch` while the batch before it is written; its write finishes it."""
        try:
            staged = await self.ledger.stage([p.event for p in batch])
        except Exception as error:  # the write stages the batch again and meets the error there
            log.debug("usage: batch not staged ahead (%r)", error)
            return
        if staged is not None:
            self._staged.append((batch, staged))

    async def discard(self, batch: list[PricedEvent]) -> None:
        """`batch` is not written after all: its transaction is rolled back, its locks freed."""
        staged = self._take_staged(batch)
        if staged is not None:
            await staged.release()

    def _take_staged(self, batch: Sequence[PricedEvent]) -> StagedBatch | None:
        """What `prepare` staged for this very batch (None for a part of it, or another)."""
        for index, (staged_for, staged) in enumerate(self._staged):
            if staged_for is batch:
                del self._staged[index]
                return staged
        return None

    async def write(self, batch: list[PricedEvent]) -> None:
        """Write the batch in one transaction, then publish what it made due."""
        if not batch:
            return
        with PROCESSING_SECONDS.labels(agent=f"{AGENT}.store").time():
            SINK_BATCH_SIZE.labels(sink=SINK).observe(len(batch))
            written = await write_isolating(batch, self._write, REFUSED, self._refused)
            observe_end_to_end(AGENT, SINK, (p.event.event.occurred_at for p in batch))
            for (service, model), cost in written.cost_by_model.items():
                COST.labels(service=service, model=model).inc(float(cost))
            USAGE_EVENTS_COUNTED.labels(outcome="counted").inc(written.inserted)
            USAGE_EVENTS_COUNTED.labels(outcome="duplicate").inc(len(batch) - written.inserted)
            if written.alerts or written.states:
                await self.publish_outbox()

    async def close(self) -> None:
        try:
            await self._release_all_staged()
        finally:
            await self.pool.close()

    async def _release_all_staged(self) -> None:
        while self._staged:
            await self._staged.pop()[1].release()

    async def _write(self, items: Sequence[PricedEvent]) -> LedgerWrite:
        with tracing.tracer().start_as_current_span(
            "usage.ledger.write",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system.name": "postgresql",
                "db.operation.name": "INSERT",
                "db.collection.name": "usage_events",
                "scribe.events": len(items),
            },
        ) as span:
            staged = self._take_staged(items)
            attempts = 0

            async def write(events: list[PricedUsage]) -> LedgerWrite:
                nonlocal staged, attempts
                attempts += 1
                if attempts > 1:
                    # A retry stages the batch again (the failed attempt released what was
                    # staged), and the batch staged after it gives its connection back
                    # meanwhile: a retry may last as long as PostgreSQL is down.
                    await self._release_all_staged()
                first, staged = staged, None
                return await self.ledger.write(events, first)

            written = await until_written(
                SINK, write, [p.event for p in items], retryable=RETRYABLE
            )
            span.set_attribute("scribe.events_inserted", written.inserted)
            return written

    async def _refused(self, item: PricedEvent, error: BaseException) -> None:
        await self.dead_letter(item.origin, "refused", f"PostgreSQL refused the event: {error}")
        USAGE_EVENTS_COUNTED.labels(outcome="refused").inc()

    async def publish_outbox(self) -> None:
        """Publish pending alerts and states. A failure leaves them pending in PostgreSQL for
        the next sweep; it never holds up counting."""
        try:
            await publish_outbox(self.budgets, self.send_all, self.thresholds_pct)
        except (KafkaError, *RETRYABLE) as error:
            SINK_ERRORS.labels(sink="kafka.budget").inc()
            log.warning("usage: budget outbox not published yet (%r); will retry", error)

    async def reconcile_budgets(self) -> None:
        """A new month resets every budget's state; a budget set while a batch of its user
        was in flight gets the alerts and state that batch would have made due."""
        if await self.budgets.reconcile(self.thresholds_pct):
            await self.publish_outbox()

    async def maintain_partitions(self, retention_months: int) -> None:
        """The current month and the next two exist ahead of time; with a retention setting,
        older months are detached."""
        today = datetime.now(UTC).date()
        await self.ledger.ensure_months(set(months_ahead(today, MONTHS_AHEAD)))
        if retention_months > 0:
            detached = await self.ledger.detach_before(retention_cutoff(today, retention_months))
            if detached:
                log.info("usage: detached ledger partitions %s", ", ".join(detached))
