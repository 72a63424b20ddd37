"""A fast, exact decode of usage events for the usage flow's hot path.

A msgspec struct reads the wire shape (types, bounds, unknown fields) in C; the string patterns,
money and timestamps then go through the same rules the pydantic `UsageEvent` applies (money and
timestamps through the very same functions). It accepts only what `UsageEvent` accepts:
anything it refuses is decoded again by `schemas.codec.decode`, so a bad event is refused for
the same reason, in the same words, as everywhere else. A JSON number for money becomes a
`Decimal` from its digits, never through a float.

The result is a `DecodedUsage`, a plain struct with `UsageEvent`'s fields: building a pydantic
model without validation (`model_construct`) cost more than all of the decoding.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from schemas.codec import MAX_MESSAGE_BYTES, DecodeError, decode
from schemas.events import Priority, UsageEvent
from schemas.fields import to_money, to_utc

__all__ = ["DecodeError", "DecodedUsage", "Usage", "decode_usage"]

# The patterns of `schemas.fields` (Identifier, Label), matched in full: `\Z`, as Python's `$`
# also matches before a final newline, which pydantic's (Rust) regex does not. msgspec's own
# `Meta(pattern=)` made its decode ~8x slower, hence the separate match.
_identifier = re.compile(r"[A-Za-z0-9._:@/-]+\Z").match
_label = re.compile(r"[^\x00-\x1f]+\Z").match
_NULL = msgspec.Raw(b"null")

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Count = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]


class _UsageWire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    event_id: Text
    request_id: Text
    user_id: Text
    service: Text
    model: Text
    input_tokens: Count
    output_tokens: Count
    images: Annotated[int, msgspec.Meta(ge=0, le=1000)]
    free_tier: bool
    occurred_at: str
    schema_version: Literal[1] = 1
    # Raw: a JSON number and a decimal string are both money; the rules are `to_money`'s.
    cost_usd: msgspec.Raw = _NULL
    world_id: Text | None = None
    latency_ms: Annotated[int, msgspec.Meta(ge=0, le=3_600_000)] | None = None
    priority: Priority | None = None
    key_id: Text | None = None


class DecodedUsage(msgspec.Struct, frozen=True, gc=False):
    """A valid usage event: `UsageEvent`'s fields and values."""

    event_id: str
    request_id: str
    user_id: str
    service: str
    model: str
    input_tokens: int
    output_tokens: int
    images: int
    free_tier: bool
    occurred_at: datetime
    cost_usd: Decimal | None = None
    world_id: str | None = None
    latency_ms: int | None = None
    priority: Priority | None = None
    key_id: str | None = None


# What the usage flow counts: decoded here, or a model built elsewhere (tests, tools).
Usage = UsageEvent | DecodedUsage

_wire = msgspec.json.Decoder(_UsageWire)
_number = msgspec.json.Decoder(Decimal)
_string = msgspec.json.Decoder(str)


def _money(raw: msgspec.Raw) -> Decimal | None:
    text = bytes(raw)
    if text == b"null":
        return None
    if text[:1] == b'"':
        return to_money(_string.decode(text))
    if text[:1] == b"-" or text[:1].isdigit():
        return to_money(_number.decode(text))
    raise ValueError("money must be a number or a decimal string")


def _fast(raw: bytes) -> DecodedUsage | None:
    """The event when the fast path accepts it; None to let the model decide."""
    try:
        w = _wire.decode(raw)
        if not (
            _identifier(w.event_id)
            and _identifier(w.request_id)
            and _identifier(w.user_id)
            and _label(w.service)
            and _label(w.model)
            and (w.world_id is None or _identifier(w.world_id))
            and (w.key_id is None or _label(w.key_id))
        ):
            return None
        return DecodedUsage(
            w.event_id,
            w.request_id,
            w.user_id,
            w.service,
            w.model,
            w.input_tokens,
            w.output_tokens,
            w.images,
            w.free_tier,
            to_utc(w.occurred_at),
            _money(w.cost_usd),
            w.world_id,
            w.latency_ms,
            w.priority,
            w.key_id,
        )
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None


def decode_usage(raw: bytes) -> Usage:
    """The usage event in `raw`, or `DecodeError` with the reason `schemas.codec.decode` gives."""
    if len(raw) <= MAX_MESSAGE_BYTES:
        decoded = _fast(raw)
        if decoded is not None:
            return decoded
    return decode(raw, UsageEvent)
