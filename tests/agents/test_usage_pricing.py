from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from agents.usage.pricing import Priced, Refused, UsageLimits, price_usage, quantize_money
from schemas.events import UsageEvent
from schemas.examples import example
from schemas.model_catalog import load_catalog, parse_catalog

NOW = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)
CATALOG = load_catalog()
LIMITS = UsageLimits(max_tokens_per_event=1_000_000, max_clock_skew=timedelta(hours=1))


def usage(**overrides: Any) -> UsageEvent:
    fields: dict[str, Any] = {"occurred_at": NOW, "cost_usd": None, "free_tier": False}
    return example(UsageEvent, **(fields | overrides))


def test_text_tokens_are_priced_per_million_from_the_catalog() -> None:
    event = usage(service="gemini", model="gemini-2.5-flash", input_tokens=1000, output_tokens=2000)
    # 1,000 x 0.30 / 1M + 2,000 x 2.50 / 1M
    assert price_usage(event, CATALOG, LIMITS, NOW) == Priced(Decimal("0.0053"), CATALOG.version)


def test_images_are_priced_per_image() -> None:
    event = usage(
        service="gemini",
        model="gemini-2.5-flash-image",
        input_tokens=100,
        output_tokens=0,
        images=3,
    )
    # 100 x 0.30 / 1M + 3 x 0.039
    assert price_usage(event, CATALOG, LIMITS, NOW) == Priced(Decimal("0.11703"), CATALOG.version)


def test_the_producers_cost_wins_even_for_a_model_the_catalog_lacks() -> None:
    event = usage(model="someone/new-model", cost_usd=Decimal("0.25"))
    assert price_usage(event, CATALOG, LIMITS, NOW) == Priced(Decimal("0.25"), None)


def test_unknown_model_without_cost_is_refused_as_unpriced() -> None:
    outcome = price_usage(usage(model="someone/new-model"), CATALOG, LIMITS, NOW)
    assert isinstance(outcome, Refused)
    assert outcome.kind == "unpriced"
    assert "someone/new-model" in outcome.reason


def test_free_tier_usage_costs_nothing_whatever_the_list_price() -> None:
    event = usage(model="gemini-2.5-pro", free_tier=True, input_tokens=10_000)
    assert price_usage(event, CATALOG, LIMITS, NOW) == Priced(Decimal(0), CATALOG.version)


@pytest.mark.parametrize(
    ("input_tokens", "output_tokens", "refused"),
    [(600_000, 400_000, False), (600_000, 400_001, True)],
)
def test_tokens_above_the_ceiling_are_implausible_even_with_a_cost(
    input_tokens: int, output_tokens: int, refused: bool
) -> None:
    event = usage(input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=Decimal("1"))
    outcome = price_usage(event, CATALOG, LIMITS, NOW)
    assert isinstance(outcome, Refused) == refused
    if isinstance(outcome, Refused):
        assert outcome.kind == "implausible"
        assert "1,000,001 tokens" in outcome.reason


def test_usage_from_beyond_the_clock_skew_is_implausible() -> None:
    assert isinstance(
        price_usage(usage(occurred_at=NOW + timedelta(minutes=59)), CATALOG, LIMITS, NOW), Priced
    )
    outcome = price_usage(usage(occurred_at=NOW + timedelta(minutes=61)), CATALOG, LIMITS, NOW)
    assert isinstance(outcome, Refused)
    assert outcome.kind == "implausible"


def test_a_price_below_the_ledgers_scale_is_rounded_half_even_to_12_places() -> None:
    catalog = parse_catalog(
        '{"version": "t", "models": [{"service": "s", "model": "m", "kind": "text", '
        '"quality": 1, "free": false, "input_per_mtok": "0.0000015", '
        '"output_per_mtok": "0.0000025", "per_image": "0"}]}'
    )
    one_input = usage(service="s", model="m", input_tokens=1, output_tokens=0)
    one_output = usage(service="s", model="m", input_tokens=0, output_tokens=1)
    # 1.5e-12 -> 2e-12 and 2.5e-12 -> 2e-12 (half to even), exactly what NUMERIC(24,12) keeps.
    assert price_usage(one_input, catalog, LIMITS, NOW) == Priced(Decimal("2E-12"), "t")
    assert price_usage(one_output, catalog, LIMITS, NOW) == Priced(Decimal("2E-12"), "t")
    assert quantize_money(Decimal("0.1234567890125")) == Decimal("0.123456789012")
