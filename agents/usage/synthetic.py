"""Synthetic usage events for the tests, the benchmark and the demo: what a producer would
send, as raw JSON, across the catalog's models, with and without `cost_usd` (as a JSON
number or a string), free-tier calls, images, priorities and timestamps spread over months."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from schemas.model_catalog import load_catalog

PRIORITIES = ("urgent", "high", "normal", "low", "background", None)
# A model the catalog does not know: its producer always says what it cost.
HOUSE_SERVICE, HOUSE_MODEL = "acme", "acme/house-model"


@dataclass(frozen=True)
class SyntheticUsage:
    key: bytes
    value: bytes
    fields: dict[str, Any]  # as published; money as Decimal


def _money(rng: random.Random) -> Decimal:
    return Decimal(rng.randint(1, 10**9)).scaleb(-12)  # up to 0.001 USD, 12 places


def _moment(
    rng: random.Random, months: Sequence[date], now: datetime, within: timedelta | None
) -> datetime:
    if within is not None:
        return now - timedelta(microseconds=rng.randrange(int(within.total_seconds() * 10**6)))
    month = rng.choice(months)
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end = min(datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC), now)
    seconds = max(int((end - start).total_seconds()) - 1, 0)
    return start + timedelta(seconds=rng.randint(0, seconds), microseconds=rng.randrange(10**6))


def _encode(fields: dict[str, Any], money_as_number: bool) -> bytes:
    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            text = format(value, "f")
            return orjson.Fragment(text.encode()) if money_as_number else text
        raise TypeError(type(value).__name__)

    return orjson.dumps(fields, default=default, option=orjson.OPT_UTC_Z)


def synthetic_usage(
    run_id: str,
    count: int,
    *,
    users: int = 200,
    months: Sequence[date] | None = None,
    seed: int = 0,
    now: datetime | None = None,
    within: timedelta | None = None,
) -> Iterator[SyntheticUsage]:
    """`count` distinct events of users `<run_id>-u<n>`, ids `<run_id>-<n>`, at random moments
    of `months` (default: this month so far), or of the last `within` (live traffic)."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    months = months or [now.date().replace(day=1)]
    models = [(m.service, m.model, m.kind, m.free) for m in load_catalog().models]
    models.append((HOUSE_SERVICE, HOUSE_MODEL, "text", False))
    for index in range(count):
        service, model, kind, free = rng.choice(models)
        free_tier = free or rng.random() < 0.1
        fields: dict[str, Any] = {
            "event_id": f"{run_id}-{index}",
            "request_id": f"req-{run_id}-{index}",
            "user_id": f"{run_id}-u{rng.randrange(users)}",
            "service": service,
            "model": model,
            "input_tokens": rng.randint(0, 8000),
            "output_tokens": 0 if kind == "image" else rng.randint(0, 4000),
            "images": rng.randint(1, 4) if kind == "image" else 0,
            "free_tier": free_tier,
            "occurred_at": _moment(rng, months, now, within),
        }
        if model == HOUSE_MODEL or (not free_tier and rng.random() < 0.5):
            fields["cost_usd"] = _money(rng)
        priority = rng.choice(PRIORITIES)
        if priority is not None:
            fields["priority"] = priority
        if rng.random() < 0.3:
            fields["world_id"] = f"world-{rng.randrange(50)}"
            fields["latency_ms"] = rng.randint(50, 30_000)
        yield SyntheticUsage(
            fields["user_id"].encode(), _encode(fields, rng.random() < 0.5), fields
        )
