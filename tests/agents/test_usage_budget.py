from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from agents.usage.budget import alert_event, state_event, thresholds_reached
from sinks.postgres.budgets import AlertRecord, StateRecord

AT = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)


def test_a_threshold_is_reached_exactly_at_its_percent_not_a_fraction_before() -> None:
    budget = Decimal(10)
    assert thresholds_reached(Decimal("7.999999999999"), budget, (50, 80, 100)) == [50]
    assert thresholds_reached(Decimal("8"), budget, (100, 50, 80)) == [50, 80]
    assert thresholds_reached(Decimal("10.000000000001"), budget, (50, 80, 100)) == [50, 80, 100]
    assert thresholds_reached(Decimal(0), budget, (50, 80, 100)) == []


def test_alert_event_carries_the_row_and_a_stable_id() -> None:
    record = AlertRecord(7, "u-1", date(2026, 11, 1), 80, Decimal(10), Decimal("8.5"), AT)
    event = alert_event(record)
    assert event.alert_id == "budget-alert-7"
    assert (event.user_id, event.month, event.threshold_pct) == ("u-1", date(2026, 11, 1), 80)
    assert (event.budget_usd, event.spent_usd, event.occurred_at) == (
        Decimal(10),
        Decimal("8.5"),
        AT,
    )


def test_state_event_shows_remaining_and_thresholds() -> None:
    record = StateRecord("u-1", date(2026, 11, 1), Decimal(10), Decimal("8.5"), 42, AT)
    state = state_event(record, (50, 80, 100))
    assert state is not None
    assert state.remaining_usd == Decimal("1.5")
    assert not state.exhausted
    assert state.thresholds_reached == [50, 80]
    assert state.version == 42


def test_state_event_of_an_overspent_budget_has_nothing_remaining() -> None:
    record = StateRecord("u-1", date(2026, 11, 1), Decimal(10), Decimal("12"), 3, AT)
    state = state_event(record, (50, 80, 100))
    assert state is not None
    assert state.remaining_usd == 0
    assert state.exhausted
    assert state.thresholds_reached == [50, 80, 100]


def test_a_removed_budget_is_a_tombstone() -> None:
    record = StateRecord("u-1", date(2026, 11, 1), None, Decimal(0), 4, AT)
    assert state_event(record, (50, 80, 100)) is None
