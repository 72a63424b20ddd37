"""The engine tests' load: its expected totals count each event_id once."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

from devkit.usage_load import DailyTotal, expected_daily, usage_events, with_redeliveries


def test_events_are_distinct_valid_and_repeatable() -> None:
    now = datetime.now(UTC)  # one clock for both: a second may pass between the calls
    events = usage_events("run1", 500, now=now)
    assert len({e.event_id for e in events}) == 500
    assert all(e.user_id.startswith("run1-u") and e.cost_usd for e in events)
    assert usage_events("run1", 500, now=now) == events


def test_redelivered_events_come_after_their_first_delivery_and_count_once() -> None:
    events = usage_events("run2", 2000)
    mixed = with_redeliveries(events, 0.05)
    counts = Counter(e.event_id for e in mixed)
    assert 50 < len(mixed) - len(events) < 150
    assert set(counts.values()) == {1, 2}
    first_seen: dict[str, int] = {}
    for position, event in enumerate(mixed):
        first_seen.setdefault(event.event_id, position)
    assert [e.event_id for e in events] == sorted(first_seen, key=first_seen.__getitem__)
    assert expected_daily(mixed) == expected_daily(events)


def test_daily_totals_are_exact_sums_per_user_day_and_model() -> None:
    events = usage_events("run3", 300, users=3)
    totals = expected_daily(events)
    assert sum(t.requests for t in totals.values()) == 300
    assert sum((t.cost_usd for t in totals.values()), Decimal(0)) == sum(
        (e.cost_usd or Decimal(0) for e in events), Decimal(0)
    )
    assert DailyTotal(1, 2, 3, Decimal("0.5")) + DailyTotal(1, 1, 1, Decimal("0.25")) == DailyTotal(
        2, 3, 4, Decimal("0.75")
    )
