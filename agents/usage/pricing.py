"""What a usage event costs, or why it cannot be counted.

Pure: the catalog, the limits and the clock are passed in. A producer's `cost_usd` wins; an
event without one is priced from the catalog the router estimates with, so an estimate and a
bill come from the same numbers. Usage that cannot be right is refused with a reason the DLQ
keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from schemas.fields import MONEY_PLACES
from schemas.model_catalog import ModelCatalog, UnknownModelError
from schemas.usage_wire import Usage

# The ledger stores NUMERIC(24, 12): a price is rounded to that scale here, so Python's sum
# and PostgreSQL's sum of the same events are the same number.
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)


@dataclass(frozen=True)
class UsageLimits:
    """Bounds beyond which usage is refused rather than billed."""

    max_tokens_per_event: int = 2_000_000
    max_clock_skew: timedelta = timedelta(days=1)


@dataclass(frozen=True)
class Priced:
    cost_usd: Decimal
    catalog_version: str | None  # None: the producer's own cost_usd


@dataclass(frozen=True)
class Refused:
    kind: str  # "unpriced" or "implausible": the DLQ's error kind
    reason: str


def quantize_money(value: Decimal) -> Decimal:
    return value.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_EVEN)


def price_usage(
    event: Usage, catalog: ModelCatalog, limits: UsageLimits, now: datetime
) -> Priced | Refused:
    tokens = event.input_tokens + event.output_tokens
    if tokens > limits.max_tokens_per_event:
        return Refused(
            "implausible",
            f"{tokens:,} tokens in one event is above the ceiling of "
            f"{limits.max_tokens_per_event:,} (SCRIBE_USAGE_MAX_TOKENS)",
        )
    if event.occurred_at > now + limits.max_clock_skew:
        return Refused(
            "implausible",
            f"occurred_at {event.occurred_at.isoformat()} is more than "
            f"{limits.max_clock_skew} ahead of the aggregator's clock",
        )
    if event.cost_usd is not None:
        return Priced(event.cost_usd, None)
    if event.free_tier:
        # Served on a provider's free tier: nothing to pay, whatever the model's list price.
        return Priced(Decimal(0), catalog.version)
    try:
        price = catalog.get(event.service, event.model)
    except UnknownModelError as error:
        return Refused("unpriced", f"no cost_usd and {error}")
    cost = price.cost(event.input_tokens, event.output_tokens, event.images)
    return Priced(quantize_money(cost), catalog.version)
