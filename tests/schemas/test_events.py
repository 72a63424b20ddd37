"""Strict validation of every event family, and exact money."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from schemas import DecodeError, decode, encode
from schemas.events import (
    AIRequest,
    AIResponse,
    BudgetState,
    CacheInvalidation,
    Event,
    RefusalKind,
    UsageEvent,
    WorldEvent,
    WorldTick,
)
from schemas.examples import example
from schemas.json_schema import FAMILIES


def _usage(**changes: Any) -> bytes:
    fields = orjson.loads(encode(example(UsageEvent)))
    fields.update(changes)
    return orjson.dumps({k: v for k, v in fields.items() if v is not ...})


@pytest.mark.parametrize("model", FAMILIES.values(), ids=FAMILIES.keys())
def test_every_family_round_trips_through_its_encoding(model: type[Event]) -> None:
    event = example(model)
    assert decode(encode(event), model) == event


def test_money_from_a_json_number_keeps_every_digit() -> None:
    raw = _usage(cost_usd=None).replace(b'"cost_usd":null', b'"cost_usd":0.123456789012')
    assert decode(raw, UsageEvent).cost_usd == Decimal("0.123456789012")


def test_money_from_a_decimal_string() -> None:
    assert decode(_usage(cost_usd="0.0012345"), UsageEvent).cost_usd == Decimal("0.0012345")


def test_negative_zero_money_is_zero_and_written_without_a_sign() -> None:
    raw = _usage(cost_usd=None).replace(b'"cost_usd":null', b'"cost_usd":-0.0')
    event = decode(raw, UsageEvent)
    assert orjson.loads(encode(event))["cost_usd"] == "0.0"


def test_money_is_serialized_as_an_exact_string() -> None:
    event = example(UsageEvent, cost_usd=Decimal("0.000000000001"))
    assert orjson.loads(encode(event))["cost_usd"] == "0.000000000001"


def test_money_with_zeros_past_the_last_place_is_written_with_twelve_places() -> None:
    """A 40-character string is read; written back with its 39 places it would be 41 long,
    which is refused. Found by the decode fuzz test (router_settlement)."""
    raw = "." + "0" * 39
    event = decode(_usage(cost_usd=raw), UsageEvent)
    assert orjson.loads(encode(event))["cost_usd"] == "0.000000000000"
    assert decode(encode(event), UsageEvent) == event
    cost = decode(_usage(cost_usd="1.50000000000000000000"), UsageEvent).cost_usd
    assert cost is not None and cost.as_tuple() == Decimal("1.500000000000").as_tuple()


@pytest.mark.parametrize(
    ("raw_cost", "message"),
    [
        (b"NaN", "malformed JSON"),
        (b"Infinity", "malformed JSON"),
        (b'"NaN"', "finite"),
        (b'"-Infinity"', "finite"),
        (b"-0.5", "negative"),
        (b'"abc"', "not a decimal"),
        (b"true", "not a boolean"),
        (b"0.0000000000001", "decimal places"),
        (b"1e400", "not plausible"),
    ],
)
def test_money_refuses_what_cannot_be_an_amount(raw_cost: bytes, message: str) -> None:
    raw = _usage(cost_usd=None).replace(b'"cost_usd":null', b'"cost_usd":' + raw_cost)
    with pytest.raises(DecodeError, match=message):
        decode(raw, UsageEvent)


def test_money_refuses_a_python_float() -> None:
    with pytest.raises(ValueError, match="float"):
        example(UsageEvent, cost_usd=0.1)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"input_tokens": -1}, "input_tokens"),
        ({"output_tokens": "12"}, "output_tokens"),
        ({"images": 1.5}, "images"),
        ({"free_tier": 1}, "free_tier"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": "x" * 129}, "user_id"),
        ({"model": "bad\nname"}, "model"),
        ({"event_id": ...}, "event_id"),
        ({"surprise": 1}, "surprise"),
        ({"schema_version": 2}, "schema_version"),
        ({"priority": "asap"}, "priority"),
    ],
)
def test_usage_event_rejections_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(_usage(**change), UsageEvent)
    assert caught.value.kind == "schema"
    assert any(line.startswith(field) for line in caught.value.errors), caught.value.errors


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-11-27T14:00:00Z", datetime(2026, 11, 27, 14, tzinfo=UTC)),
        ("2026-11-27T15:30:00+01:30", datetime(2026, 11, 27, 14, tzinfo=UTC)),
    ],
)
def test_timestamps_are_normalized_to_utc(stamp: str, expected: datetime) -> None:
    assert decode(_usage(occurred_at=stamp), UsageEvent).occurred_at == expected


@pytest.mark.parametrize(
    "stamp", ["2026-11-27T14:00:00", "yesterday", "1970-01-01T00:00:00Z", "2300-01-01T00:00:00Z"]
)
def test_timestamps_without_offset_or_out_of_range_are_refused(stamp: str) -> None:
    with pytest.raises(DecodeError, match="occurred_at"):
        decode(_usage(occurred_at=stamp), UsageEvent)


def test_ai_request_enums_and_prompt_bounds() -> None:
    assert example(AIRequest, kind="image", priority="urgent").kind == "image"
    with pytest.raises(ValueError, match="prompt"):
        example(AIRequest, prompt="")
    with pytest.raises(ValueError, match="prompt"):
        example(AIRequest, prompt="x" * 32_001)
    with pytest.raises(ValueError, match="user_tier"):
        example(AIRequest, user_tier="gold")


def test_world_event_payload_has_a_size_cap() -> None:
    with pytest.raises(ValueError, match="payload is"):
        example(WorldEvent, payload={"blob": "x" * (64 * 1024)})


def test_world_event_type_is_a_snake_case_word() -> None:
    with pytest.raises(ValueError, match="type"):
        example(WorldEvent, type="Drop Table")


def test_world_tick_is_not_negative() -> None:
    with pytest.raises(ValueError, match="tick"):
        example(WorldTick, tick=-1)


def test_a_budget_state_version_is_what_its_bigint_sequence_can_give() -> None:
    """A version past 64 bits decoded, then could not be encoded again (found by the fuzz)."""
    highest = example(BudgetState, version=2**63 - 1)
    assert decode(encode(highest), BudgetState) == highest
    fields = orjson.loads(encode(highest))
    fields["version"] = 2**64
    with pytest.raises(DecodeError, match="version"):
        decode(json.dumps(fields).encode(), BudgetState)


def test_invalidation_needs_a_target() -> None:
    with pytest.raises(ValueError, match="at least one of keys"):
        example(CacheInvalidation, keys=[])
    assert example(CacheInvalidation, keys=[], urls=["https://cdn.example/a.png"]).urls


def test_messages_over_one_mebibyte_are_refused_before_parsing() -> None:
    with pytest.raises(DecodeError, match="size"):
        decode(b" " * (1024 * 1024 + 1), UsageEvent)


def test_malformed_json_and_non_objects() -> None:
    with pytest.raises(DecodeError, match="json"):
        decode(b"{", UsageEvent)
    with pytest.raises(DecodeError, match="expected a JSON object"):
        decode(b"[1, 2]", UsageEvent)
    with pytest.raises(DecodeError, match="json"):
        decode(b"\xff\xfe", UsageEvent)


REJECTED = (
    b'{"request_id":"r-1","user_id":"u-1","status":"rejected",'
    b'"completed_at":"2026-01-01T00:00:00Z","error":"over budget"'
)


def test_a_response_without_a_refusal_still_decodes() -> None:
    """What writers older than the field produced."""
    assert decode(REJECTED + b"}", AIResponse).refusal is None


def test_a_refusal_round_trips_with_its_kind_and_wait() -> None:
    raw = REJECTED + b',"refusal":{"kind":"budget","retry_after_s":3600}}'
    response = decode(raw, AIResponse)
    assert response.refusal is not None
    assert (response.refusal.kind, response.refusal.retry_after_s) == (RefusalKind.BUDGET, 3600)
    assert decode(encode(response), AIResponse) == response


@pytest.mark.parametrize(
    ("refusal", "field"),
    [
        (b'{"kind":"sulking"}', "kind"),
        (b'{"kind":"budget","retry_after_s":-1}', "retry_after_s"),
        (b'{"kind":"budget","retry_after_s":"60"}', "retry_after_s"),
        (b'{"kind":"budget","why":"x"}', "why"),
    ],
)
def test_a_refusal_outside_the_contract_is_refused(refusal: bytes, field: str) -> None:
    with pytest.raises(DecodeError) as refused:
        decode(REJECTED + b',"refusal":' + refusal + b"}", AIResponse)
    assert any(line.startswith(f"refusal.{field}") for line in refused.value.errors), refused
