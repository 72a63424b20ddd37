"""The budget state coupling: tolerant of shapes, never fatal."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import date
from decimal import Decimal

from aiokafka import TopicPartition

from agents.router.budget_state import (
    BudgetBook,
    budget_state_spec,
    parse_budget_state,
    read_budget_state,
)
from agents.router.policy import Budget
from runtime.source import BatchSource, Record
from runtime.testing import ListConsumer


def test_the_agreed_shape() -> None:
    parsed = parse_budget_state(
        b"u-1", b'{"user_id": "u-1", "month": "2026-11", "budget_usd": "10", "spent_usd": 2.5}'
    )
    assert parsed == ("u-1", Budget(date(2026, 11, 1), Decimal("10"), Decimal("2.5")))


def test_variants_are_tolerated() -> None:
    assert parse_budget_state(b"u-2", b'{"budget_usd": 5, "month": "2026-11-01"}') == (
        "u-2",
        Budget(date(2026, 11, 1), Decimal(5), Decimal(0)),
    )
    assert parse_budget_state(b"u-3", b'{"budget_usd": 5, "spent_usd": 1}') == (
        "u-3",
        Budget(None, Decimal(5), Decimal(1)),
    )


def test_unreadable_records_are_skipped() -> None:
    for value in (b"{", b"[1]", b'{"spent_usd": 1}', b'{"budget_usd": -1}', b'{"budget_usd": "x"}'):
        assert parse_budget_state(b"u", value) is None
    assert parse_budget_state(None, b'{"budget_usd": 1}') is None


def test_book_applies_updates_and_tombstones() -> None:
    book = BudgetBook()
    book.apply(b"u-1", b'{"budget_usd": "10", "spent_usd": "1"}')
    book.apply(b"u-1", b'{"budget_usd": "10", "spent_usd": "4"}')
    book.apply(b"u-1", b"not json")
    budget = book.get("u-1")
    assert budget is not None and budget.spent_usd == Decimal(4)
    book.apply(b"u-1", None)
    assert book.get("u-1") is None


async def test_the_reader_reads_every_partition_from_the_beginning() -> None:
    topic = "budget.state"
    consumer = ListConsumer(
        [
            Record(topic, 0, 0, b"u-1", b'{"budget_usd": "10", "spent_usd": "1"}'),
            Record(topic, 1, 0, b"u-2", b'{"budget_usd": "5"}'),
            Record(topic, 0, 1, b"u-1", b'{"budget_usd": "10", "spent_usd": "9"}'),
            Record(topic, 1, 1, b"u-2", None),  # a tombstone
            Record(topic, 2, 0, b"u-3", b"not json"),
        ]
    )
    spec = budget_state_spec(topic)
    source: BatchSource[Record] = BatchSource(spec, consumer, lambda r: r, _no_dead_letter)
    for tp in consumer.queues:  # positioned at the end: only the seek brings records back
        consumer.queues[tp] = []
    book = BudgetBook()
    partitions = frozenset(TopicPartition(topic, p) for p in range(3))
    reading = asyncio.create_task(read_budget_state(source, partitions, book))
    try:
        async with asyncio.timeout(5):
            while book.get("u-1") is None or not consumer.drained:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    u1 = book.get("u-1")
    assert u1 is not None and u1.spent_usd == Decimal(9)
    assert book.get("u-2") is None and book.get("u-3") is None
    assert consumer.assignment() == partitions
    assert consumer.commits == [], "a reader without a group commits nothing"


async def _no_dead_letter(record: Record, kind: str, reason: str) -> None:
    raise AssertionError("nothing is dead-lettered")
