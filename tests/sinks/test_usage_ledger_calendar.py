from __future__ import annotations

from datetime import date
from decimal import Decimal

from schemas.events import UsageEvent
from schemas.examples import example
from sinks.postgres.usage import (
    PricedUsage,
    add_months,
    first_of_each_id,
    months_ahead,
    retention_cutoff,
)


def test_partitions_ahead_are_the_current_month_and_the_next_two_across_a_year_end() -> None:
    assert months_ahead(date(2026, 11, 27), 2) == [
        date(2026, 11, 1),
        date(2026, 12, 1),
        date(2027, 1, 1),
    ]


def test_retention_keeps_the_current_month_and_the_n_before_it() -> None:
    assert retention_cutoff(date(2026, 11, 27), 12) == date(2025, 11, 1)
    assert retention_cutoff(date(2026, 1, 5), 1) == date(2025, 12, 1)
    assert add_months(date(2026, 3, 1), -15) == date(2024, 12, 1)


def test_a_batch_keeps_the_first_of_each_event_id() -> None:
    first = example(UsageEvent, event_id="e-1", cost_usd=Decimal(1))
    again = example(UsageEvent, event_id="e-1", cost_usd=Decimal(2))
    other = example(UsageEvent, event_id="e-2", cost_usd=Decimal(3))
    rows = [PricedUsage(e, e.cost_usd or Decimal(0), None) for e in (first, again, other)]
    assert [r.cost_usd for r in first_of_each_id(rows)] == [Decimal(1), Decimal(3)]
