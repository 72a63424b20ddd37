"""A corpus of bad (and awkward but valid) input for every input topic.

Each case is raw bytes as a producer might send them, with what the pipeline must do: process
it (`VALID`) or dead-letter it with a reason of the given kind (`json`, `schema`, `size`, or
a flow's own: `unpriced`, `implausible`).
Cases are derived from the valid example of the topic's family, so they stay current when a
family gains fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from agents.usage.pricing import UsageLimits
from schemas import encode
from schemas.codec import MAX_MESSAGE_BYTES
from schemas.events import AIRequest, CacheInvalidation, Event, UsageEvent, WorldEvent, WorldTick
from schemas.examples import example
from topics.catalog import (
    AI_REQUESTS,
    CACHE_INVALIDATIONS,
    USAGE_EVENTS,
    WORLD_EVENTS,
    WORLD_TICKS,
    TopicSpec,
)

VALID = "valid"

TIMESTAMP_FIELD: dict[type[Event], str] = {
    AIRequest: "created_at",
    UsageEvent: "occurred_at",
    WorldEvent: "occurred_at",
    WorldTick: "occurred_at",
    CacheInvalidation: "occurred_at",
}


@dataclass(frozen=True)
class Case:
    name: str
    value: bytes | None  # None: a tombstone (a record without a value)
    expected: str  # VALID or the DecodeError kind the dead letter must carry
    event: Event | None = None  # for a valid case: what the pipeline must reflect


def _fields(event: Event) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(encode(event))
    return loaded


def _with(event: Event, **changes: Any) -> bytes:
    return orjson.dumps({**_fields(event), **changes})


def _token(event: Event, field: str, token: bytes) -> bytes:
    """The event with one field's value replaced by raw JSON text (NaN, a bad escape...)."""
    fields = _fields(event)
    fields[field] = "__TOKEN__"
    return orjson.dumps(fields).replace(b'"__TOKEN__"', token)


def _generic(event: Event, spec: TopicSpec) -> Iterator[Case]:
    """Cases every family shares: broken JSON, wrong shapes, bad strings, bad timestamps."""
    raw = encode(event)
    fields = _fields(event)
    when = TIMESTAMP_FIELD[type(event)]
    required = [name for name, info in type(event).model_fields.items() if info.is_required()]
    yield Case("truncated-json", raw[:-7], "json")
    yield Case("empty-bytes", b"", "json")
    yield Case("tombstone", None, "json")
    yield Case("not-utf8", b"\xff\xfe" + raw, "json")
    yield Case("lone-high-surrogate", _token(event, spec.key_field, b'"\\ud800"'), "json")
    yield Case("lone-low-surrogate", _token(event, spec.key_field, b'"\\udc00"'), "json")
    yield Case("raw-nul-in-string", _token(event, spec.key_field, b'"a\x00b"'), "json")
    yield Case("nan-token", _token(event, when, b"NaN"), "json")
    yield Case("infinity-token", _token(event, when, b"Infinity"), "json")
    yield Case("minus-infinity-token", _token(event, when, b"-Infinity"), "json")
    yield Case("json-array", b"[" + raw + b"]", "schema")
    yield Case("json-scalar", b"42", "schema")
    yield Case("json-null", b"null", "schema")
    padding = "x" * (MAX_MESSAGE_BYTES + 1)
    yield Case("over-1-mib", orjson.dumps({**fields, "padding": padding}), "size")
    for name in required:
        yield Case(
            f"missing-{name}",
            orjson.dumps({k: v for k, v in fields.items() if k != name}),
            "schema",
        )
    yield Case("wrong-type-key", _with(event, **{spec.key_field: 12345}), "schema")
    yield Case("bool-as-key", _with(event, **{spec.key_field: True}), "schema")
    yield Case("unknown-field", _with(event, surprise=1), "schema")
    yield Case("unknown-schema-version", _with(event, schema_version=2), "schema")
    yield Case("nul-escape-in-id", _with(event, **{spec.key_field: "a\u0000b"}), "schema")
    yield Case("emoji-in-id", _with(event, **{spec.key_field: "user-\U0001f600"}), "schema")
    yield Case("rtl-override-in-id", _with(event, **{spec.key_field: "user-\u202egnp"}), "schema")
    yield Case("overlong-id", _with(event, **{spec.key_field: "u" * 129}), "schema")
    yield Case("far-past", _with(event, **{when: "1970-01-01T00:00:00Z"}), "schema")
    yield Case("far-future", _with(event, **{when: "9999-12-31T23:59:59Z"}), "schema")
    yield Case("year-zero-ish", _with(event, **{when: "0001-01-01T00:00:00Z"}), "schema")
    yield Case("no-utc-offset", _with(event, **{when: "2026-01-01T00:00:00"}), "schema")
    yield Case("timestamp-as-number", _with(event, **{when: 1764252000}), "schema")
    yield Case("valid-example", raw, VALID, event)


def _usage(new: Callable[..., UsageEvent]) -> Iterator[Case]:
    event = new()
    yield Case("negative-tokens", _with(event, input_tokens=-1), "schema")
    yield Case("tokens-as-string", _with(event, input_tokens="12"), "schema")
    yield Case("fractional-tokens", _with(event, output_tokens=1.5), "schema")
    yield Case("huge-tokens", _token(event, "input_tokens", b"1" + b"0" * 30), "schema")
    yield Case("negative-cost", _with(event, cost_usd="-0.01"), "schema")
    yield Case("nan-cost-string", _with(event, cost_usd="NaN"), "schema")
    yield Case("infinity-cost-string", _with(event, cost_usd="Infinity"), "schema")
    yield Case("overflow-cost", _token(event, "cost_usd", b"1e400"), "schema")
    yield Case("too-precise-cost", _with(event, cost_usd="0.0000000000001"), "schema")
    yield Case("free-tier-as-string", _with(event, free_tier="true"), "schema")
    yield Case("unknown-priority", _with(event, priority="whenever"), "schema")
    yield Case("nul-in-label", _with(event, model="gpt\u0000x"), "schema")
    # Valid events the usage flow refuses (kinds from agents/usage/pricing.py).
    unpriced = {k: v for k, v in _fields(event).items() if k != "cost_usd"}
    yield Case("unpriced", orjson.dumps(unpriced | {"model": "no-such-model-7"}), "unpriced")
    ceiling = UsageLimits().max_tokens_per_event
    yield Case(
        "implausible-tokens", _with(event, input_tokens=ceiling, output_tokens=1), "implausible"
    )
    ahead = (datetime.now(UTC) + UsageLimits().max_clock_skew + timedelta(hours=1)).isoformat()
    yield Case("implausible-future", _with(event, occurred_at=ahead), "implausible")
    smallest = new(cost_usd=Decimal("0.000000000001"))
    yield Case("valid-smallest-cost", encode(smallest), VALID, smallest)
    as_number = new(cost_usd=Decimal("1.25"))
    yield Case(
        "valid-cost-as-json-number", _token(as_number, "cost_usd", b"1.25"), VALID, as_number
    )
    biggest = new(
        input_tokens=ceiling // 2, output_tokens=ceiling // 2, cost_usd=Decimal("1000000")
    )
    yield Case("valid-largest-counts", encode(biggest), VALID, biggest)
    emoji = new(model="gpt-\U0001f600-\u05d0\u05d1-\u202e")
    yield Case("valid-emoji-rtl-label", encode(emoji), VALID, emoji)
    oldest = new(occurred_at="2000-01-01T00:00:00Z")
    yield Case("valid-earliest-timestamp", encode(oldest), VALID, oldest)
    offset = new(occurred_at="2026-06-30T23:30:00-05:30")
    yield Case(
        "valid-offset-timestamp",
        _with(offset, occurred_at="2026-06-30T23:30:00-05:30"),
        VALID,
        offset,
    )
    twice = new()
    yield Case("valid-duplicate-id-first", encode(twice), VALID, twice)
    yield Case("valid-duplicate-id-again", encode(twice), VALID, twice)


def _requests(event: AIRequest) -> Iterator[Case]:
    yield Case("unknown-kind", _with(event, kind="video"), "schema")
    yield Case("empty-prompt", _with(event, prompt=""), "schema")
    yield Case("overlong-prompt", _with(event, prompt="p" * 32_001), "schema")
    yield Case("negative-max-cost", _with(event, max_cost_usd="-1"), "schema")
    yield Case(
        "valid-emoji-rtl-prompt",
        _with(event, prompt="\u202eolleh \U0001f9d9\u200d\u2642\ufe0f"),
        VALID,
    )
    yield Case("valid-longest-prompt", _with(event, prompt="p" * 32_000), VALID)


def _world_events(event: WorldEvent) -> Iterator[Case]:
    yield Case("unknown-type-shape", _with(event, type="Bad Type!"), "schema")
    yield Case("payload-not-object", _with(event, payload=[1, 2]), "schema")
    yield Case("unknown-type", _with(event, type="dragon_summoned"), "schema")
    yield Case("payload-missing-a-field", _with(event, payload={"importance": 3}), "schema")
    # Every field within its own bounds, the whole over 64 KiB.
    huge = {"faction_id": "f", "join": ["n" * 128] * 1000}
    yield Case("payload-over-64-kib", _with(event, type="faction_changed", payload=huge), "schema")
    yield Case(
        "valid-unicode-payload",
        _with(event, payload={"content": "\u05de\u05d9\u05e8\u05d4 \U0001f409"}),
        VALID,
    )


def _ticks(event: WorldTick) -> Iterator[Case]:
    yield Case("negative-tick", _with(event, tick=-1), "schema")
    yield Case("tick-beyond-2-53", _with(event, tick=2**53 + 1), "schema")
    yield Case("nan-tick", _token(event, "tick", b"NaN"), "json")


def _invalidations(new: Callable[..., CacheInvalidation]) -> Iterator[Case]:
    event = new()
    yield Case("no-targets", _with(event, keys=[]), "schema")
    yield Case("empty-key", _with(event, keys=[""]), "schema")
    yield Case("keys-as-string", _with(event, keys="world:1"), "schema")
    yield Case("too-many-keys", _with(event, keys=[f"k{i}" for i in range(1001)]), "schema")
    awkward = new(keys=["emoji:\U0001f600", "rtl:\u202eabc", "nul:a\u0000b", "k" * 512])
    yield Case("valid-awkward-keys", encode(awkward), VALID, awkward)
    twice = new()
    yield Case("valid-duplicate-id-first", encode(twice), VALID, twice)
    yield Case("valid-duplicate-id-again", encode(twice), VALID, twice)


def corpus(spec: TopicSpec, marker: str) -> list[Case]:
    """Every case for `spec`; ids and keys carry `marker` so one run's results can be found."""
    counter = iter(range(10**6))

    def new_usage(**overrides: Any) -> UsageEvent:
        base = example(UsageEvent, event_id=f"use-{marker}-{next(counter)}")
        # Not `example(..., **overrides)`: a `model=` override would collide with its argument.
        return UsageEvent.model_validate(
            {**_fields(base), "user_id": f"corpus-{marker}", **overrides}
        )

    def new_invalidation(**overrides: Any) -> CacheInvalidation:
        fields: dict[str, Any] = {"keys": [f"corpus:{marker}:{next(counter)}"]}
        return example(
            CacheInvalidation, id=f"inv-{marker}-{next(counter)}", **(fields | overrides)
        )

    if spec is USAGE_EVENTS:
        return [*_generic(new_usage(), spec), *_usage(new_usage)]
    if spec is CACHE_INVALIDATIONS:
        return [*_generic(new_invalidation(), spec), *_invalidations(new_invalidation)]
    if spec is AI_REQUESTS:
        request = example(AIRequest, user_id=f"corpus-requests-{marker}")  # the router bills it
        return [*_generic(request, spec), *_requests(request)]
    if spec is WORLD_EVENTS:
        world_event = example(WorldEvent, world_id=f"corpus-{marker}")
        return [*_generic(world_event, spec), *_world_events(world_event)]
    if spec is WORLD_TICKS:
        tick = example(WorldTick, world_id=f"corpus-{marker}")
        return [*_generic(tick, spec), *_ticks(tick)]
    raise LookupError(f"no corpus for {spec.name}")
