"""Cost totals exported from the usage rollups: today and month to date by service and model."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from prometheus_client import REGISTRY

from scribe.cost_totals import publish_cost_totals, utc_day_and_month


def _gauge(name: str, service: str, model: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"service": service, "model": model})


def test_the_utc_day_and_the_first_of_its_month() -> None:
    assert utc_day_and_month(datetime(2026, 11, 27, 23, 59, tzinfo=UTC)) == (
        date(2026, 11, 27),
        date(2026, 11, 1),
    )


def test_publishing_replaces_the_previous_totals() -> None:
    publish_cost_totals(
        [("gemini", "gemini-2.5-flash", Decimal("1.25"))],
        [("gemini", "gemini-2.5-flash", Decimal("10.5")), ("gemini", "old-model", Decimal(1))],
    )
    assert _gauge("scribe_cost_today_usd", "gemini", "gemini-2.5-flash") == 1.25
    assert _gauge("scribe_cost_month_to_date_usd", "gemini", "old-model") == 1.0
    # A new day: yesterday's models are gone, not left at their old values.
    publish_cost_totals([], [("gemini", "gemini-2.5-flash", Decimal("11"))])
    assert _gauge("scribe_cost_today_usd", "gemini", "gemini-2.5-flash") is None
    assert _gauge("scribe_cost_month_to_date_usd", "gemini", "old-model") is None
    assert _gauge("scribe_cost_month_to_date_usd", "gemini", "gemini-2.5-flash") == 11.0
