"""Field types shared by every event family: exact money, UTC timestamps, bounded strings."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import orjson
from pydantic import (
    BeforeValidator,
    Field,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
)

MAX_MONEY = Decimal("1000000")
MONEY_PLACES = 12
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def to_money(value: Any) -> Decimal:
    """Accept a JSON number (already a Decimal when decoded by `schemas.codec`) or a string.

    A Python float is refused: it has already lost the exact value the producer meant.
    """
    if isinstance(value, bool):
        raise ValueError("money must be a number or a decimal string, not a boolean")
    if isinstance(value, float):
        raise ValueError("money must not be a float; pass a Decimal or a decimal string")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 40:
            raise ValueError("money string is longer than 40 characters")
        try:
            result = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
    else:
        raise ValueError("money must be a number or a decimal string")
    if not result.is_finite():
        raise ValueError("money must be finite (no NaN or Infinity)")
    if result < 0:
        raise ValueError("money must not be negative")
    if result.is_zero():
        result = result.copy_abs()  # -0.0 is zero: written as "0.0", never "-0.0"
    if result > MAX_MONEY:
        raise ValueError(f"money above {MAX_MONEY} is not plausible")
    places = Decimal(1).scaleb(-MONEY_PLACES)
    if result != result.quantize(places):
        raise ValueError(f"money has more than {MONEY_PLACES} decimal places")
    if result.as_tuple().exponent < -MONEY_PLACES:  # type: ignore[operator]  # finite here
        # Zeros past the last place: the same amount, written with at most MONEY_PLACES places,
        # so its text (40 characters at most when read) stays readable when written again.
        result = result.quantize(places)
    return result


def to_utc(value: Any) -> datetime:
    if isinstance(value, str):
        if len(value) > 40:
            raise ValueError("timestamp string is longer than 40 characters")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 timestamp") from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise ValueError("timestamp must be an ISO-8601 string such as 2026-11-27T14:00:00Z")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("timestamp must carry a UTC offset, e.g. 2026-11-27T14:00:00Z")
    utc = parsed.astimezone(UTC)
    if not EARLIEST <= utc < LATEST:
        raise ValueError("timestamp is outside 2000-01-01 .. 2100-01-01")
    return utc


Money = Annotated[
    Decimal,
    BeforeValidator(to_money),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": int(MAX_MONEY)},
                {"type": "string", "pattern": r"^\s*\+?(\d+(\.\d*)?|\.\d+)\s*$"},
            ],
            "description": "US dollars, exact: a JSON number or a decimal string",
        }
    ),
]
UtcDatetime = Annotated[
    datetime,
    BeforeValidator(to_utc),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
Identifier = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/-]+$"),
]
Label = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")
]
Count = Annotated[StrictInt, Field(ge=0, le=10_000_000)]
Url = Annotated[str, StringConstraints(strict=True, max_length=2048, pattern=r"^https?://[^\s]+$")]


PAYLOAD_LIMIT_BYTES = 64 * 1024


def bounded_payload(value: dict[str, Any]) -> dict[str, Any]:
    """`value` when its JSON is at most `PAYLOAD_LIMIT_BYTES`; a payload is stored whole."""
    try:
        size = len(orjson.dumps(value, default=str))
    except TypeError as exc:
        raise ValueError(f"payload is not JSON-serializable: {exc}") from None
    if size > PAYLOAD_LIMIT_BYTES:
        raise ValueError(f"payload is {size} bytes; the limit is {PAYLOAD_LIMIT_BYTES}")
    return value
