"""The budget state coupling: tolerant of shapes, never fatal."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from agents.router.budget_state import BudgetBook, parse_budget_state
from agents.router.policy import Budget


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
