"""Bytes <-> events. JSON numbers are decoded as `Decimal` (jiter), so money never passes
through a float; events are serialized with orjson."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

import jiter
import orjson
from pydantic import BaseModel, ValidationError

MAX_MESSAGE_BYTES = 1024 * 1024
E = TypeVar("E", bound=BaseModel)


class DecodeError(ValueError):
    """Why a message is not a valid event: `kind` is `size`, `json` or `schema`."""

    def __init__(self, kind: str, reason: str, errors: list[str] | None = None) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason
        self.errors = errors or [reason]


def describe(error: ValidationError, limit: int = 5) -> list[str]:
    """Readable, bounded lines: `input_tokens: Input should be greater than or equal to 0`."""
    lines = []
    for item in error.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(part) for part in item["loc"]) or "(event)"
        lines.append(f"{where}: {item['msg']}")
    if error.error_count() > limit:
        lines.append(f"... and {error.error_count() - limit} more")
    return lines


def parse_json(raw: bytes | str, limit: int = MAX_MESSAGE_BYTES) -> Any:
    """Parse JSON with exact decimals; NaN and Infinity are not JSON and are refused."""
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > limit:
        raise DecodeError("size", f"message is {len(data)} bytes; the limit is {limit}")
    try:
        # Only keys are cached: values (ids, timestamps) rarely repeat, and caching them made
        # parsing a usage event ~12 % slower.
        return jiter.from_json(data, allow_inf_nan=False, float_mode="decimal", cache_mode="keys")
    except ValueError as exc:
        raise DecodeError("json", f"malformed JSON: {exc}") from None


def validate(value: Any, model: type[E]) -> E:
    if not isinstance(value, dict):
        raise DecodeError("schema", f"expected a JSON object, got {type(value).__name__}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = describe(exc)
        raise DecodeError("schema", "; ".join(errors), errors) from None


def decode(raw: bytes | str, model: type[E]) -> E:
    return validate(parse_json(raw), model)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")  # plain digits: '0.000000000001', never '1E-12'
    raise TypeError(f"cannot serialize {type(value).__name__}")


def encode(event: BaseModel) -> bytes:
    """Compact JSON; money as decimal strings, timestamps as UTC ISO-8601 with `Z`, enum keys
    (a world payload's `stock`) as their values."""
    return orjson.dumps(
        event.model_dump(mode="python", exclude_none=True),
        default=_default,
        option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS,
    )
