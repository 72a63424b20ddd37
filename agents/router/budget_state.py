"""The one coupling to the usage aggregator: its per-user budget state, read from a compacted
topic keyed by user_id (default `budget.state`, `SCRIBE_BUDGET_STATE_TOPIC`).

Assumed shape (to align at merge): {"user_id", "month", "budget_usd", "spent_usd"}. The reader
is tolerant: month may be "2026-11", "2026-11-01" or missing; amounts numbers or decimal
strings; the key is used when user_id is missing; a tombstone removes the user; anything else
is counted and skipped, never fatal. Every worker reads every partition (the state is small),
so the decide owner of a user always has it whatever the topic's partition count.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from aiokafka import TopicPartition
from mode import Service

from agents.router.policy import Budget
from runtime import kafka
from runtime.metrics import BUDGET_STATES
from runtime.settings import ResolvedSettings
from runtime.source import Batch, BatchSource, Record
from runtime.spec import ConsumerSpec
from schemas import DecodeError, parse_json

log = logging.getLogger(__name__)

TOPIC_POLL_S = 5.0


def _money(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def _month(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        return date.fromisoformat(text + "-01" if len(text) == 7 else text).replace(day=1)
    except ValueError:
        return None


def parse_budget_state(key: bytes | None, value: bytes | None) -> tuple[str, Budget | None] | None:
    """(user_id, budget) from one record; budget None for a tombstone; None if unreadable."""
    if value is None:
        return (key.decode(errors="replace"), None) if key else None
    try:
        data = parse_json(value)
    except DecodeError:
        return None
    if not isinstance(data, dict):
        return None
    user = data.get("user_id") or (key.decode(errors="replace") if key else None)
    budget, spent = _money(data.get("budget_usd")), _money(data.get("spent_usd", 0))
    if not isinstance(user, str) or not user or budget is None or spent is None:
        return None
    return user, Budget(month=_month(data.get("month")), budget_usd=budget, spent_usd=spent)


class BudgetBook:
    """The latest budget per user, as read so far."""

    def __init__(self) -> None:
        self._budgets: dict[str, Budget] = {}
        # Every result at zero from the start: "no budget records read" shows as 0, not absent.
        self._counts = {
            r: BUDGET_STATES.labels(result=r) for r in ("applied", "removed", "ignored")
        }

    def get(self, user_id: str) -> Budget | None:
        return self._budgets.get(user_id)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        parsed = parse_budget_state(key, value)
        if parsed is None:
            self._counts["ignored"].inc()
            return
        user, budget = parsed
        if budget is None:
            self._budgets.pop(user, None)
            self._counts["removed"].inc()
        else:
            self._budgets[user] = budget
            self._counts["applied"].inc()


def budget_state_spec(topic: str) -> ConsumerSpec:
    """What the reader reads; no group: `flow` only names its client, logs and counts."""
    return ConsumerSpec("router-budget-state", (topic,), poll_ms=1000, stop_seconds=5.0)


def _whole(record: Record) -> Record:
    return record  # every record is the book's to judge (it counts what it skips)


async def _never_rejected(record: Record, kind: str, reason: str) -> None:
    raise AssertionError("the budget state reader rejects nothing")


async def read_budget_state(
    source: BatchSource[Record], partitions: frozenset[TopicPartition], book: BudgetBook
) -> None:
    """Read `partitions` from the beginning into `book`, for as long as it runs."""
    await source.start_from_beginning(partitions)
    while True:
        batch: Batch[Record] = Batch()
        await source.fill(batch, source.spec.poll_ms)
        for received in batch.received:
            book.apply(received.origin.key, received.origin.value)


class BudgetStateReader(Service):
    """Reads the budget state topic from the beginning into a BudgetBook, without a consumer
    group, through the runtime's client factory and batch source; waits for the topic to exist
    rather than creating it (its owner sets compaction). Its stop is bounded."""

    def __init__(self, settings: ResolvedSettings, topic: str, book: BudgetBook) -> None:
        super().__init__()
        self.settings = settings
        self.spec = budget_state_spec(topic)
        self.topic = topic
        self.book = book

    @Service.task
    async def _read(self) -> None:
        partitions = await self._wait_for_topic()
        consumer = kafka.consumer(self.settings, None, **self.spec.consumer_options())
        source = BatchSource(self.spec, consumer, _whole, _never_rejected)
        try:
            await read_budget_state(
                source, frozenset(TopicPartition(self.topic, p) for p in partitions), self.book
            )
        finally:
            try:
                await asyncio.wait_for(consumer.stop(), self.spec.stop_seconds)
            except TimeoutError:
                log.warning("router: the budget state reader's consumer did not stop in time")

    async def _wait_for_topic(self) -> set[int]:
        """The topic's partitions once it exists. Listing all topics never creates one (asking
        for this topic's metadata could auto-create it without compaction)."""
        admin = kafka.admin(self.settings)
        await admin.start()
        try:
            announced = False
            while True:
                if self.topic in await admin.list_topics():
                    described = await admin.describe_topics([self.topic])
                    partitions = {p["partition"] for p in described[0]["partitions"]}
                    if partitions:
                        log.info("router: reading budget state from %s", self.topic)
                        return partitions
                if not announced:
                    log.info("router: %s does not exist yet; no budgets until it does", self.topic)
                    announced = True
                await asyncio.sleep(TOPIC_POLL_S)
        finally:
            await admin.close()
