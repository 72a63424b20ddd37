"""Request bodies: one event, an array or NDJSON; each item validated; money stays exact."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from schemas import encode
from schemas.events import AIRequest, CacheInvalidation, UsageEvent, WorldEvent, WorldTick
from schemas.examples import example
from scribe.gateway.ingest import (
    MAX_ITEM_ERRORS,
    BodyError,
    ItemError,
    parse_items,
    receipt_id,
    rejection,
    validate_items,
)

LIMIT = 1024 * 1024


def _usage(**overrides: object) -> bytes:
    return encode(example(UsageEvent, **overrides))


def test_one_event_an_array_and_ndjson_give_the_same_events() -> None:
    one, two = _usage(user_id="u-1"), _usage(user_id="u-2")
    single = parse_items(one, "application/json", LIMIT, 10)
    array = parse_items(
        b"[" + one + b"," + two + b"]", "application/json; charset=utf-8", LIMIT, 10
    )
    lines = parse_items(one + b"\n\n" + two + b"\n", "application/x-ndjson", LIMIT, 10)
    assert (
        [i.value for i in array]
        == [i.value for i in lines]
        == [*(i.value for i in single), array[1].value]
    )
    assert [i.line for i in lines] == [1, 3]
    events, errors = validate_items(lines, UsageEvent)
    assert errors == [] and [e.user_id for e in events] == ["u-1", "u-2"]


def test_money_is_parsed_exactly_never_through_a_float() -> None:
    exact = b"999999.999999999999"  # 18 significant digits: a float cannot hold them
    raw = _usage().replace(b'"cost_usd":"0.0012345"', b'"cost_usd":' + exact)
    assert exact in raw
    (event,), errors = validate_items(parse_items(raw, "application/json", LIMIT, 1), UsageEvent)
    assert errors == []
    assert event.cost_usd == Decimal(exact.decode()) != Decimal(float(exact))


def test_every_invalid_item_is_reported_with_its_index_and_fields() -> None:
    good = orjson.loads(_usage())
    body = orjson.dumps([good, good | {"input_tokens": -1}, 7, good | {"images": "x"}])
    events, errors = validate_items(parse_items(body, "application/json", LIMIT, 10), UsageEvent)
    assert len(events) == 1
    assert [e.index for e in errors] == [1, 2, 3]
    assert errors[0].errors == ["input_tokens: Input should be greater than or equal to 0"]
    assert errors[1].errors == ["expected a JSON object, got int"]
    assert errors[2].errors[0].startswith("images:")


def test_a_malformed_ndjson_line_is_an_item_error_with_its_line() -> None:
    items = parse_items(_usage() + b"\n{oops\n", "application/x-ndjson", LIMIT, 10)
    _, errors = validate_items(items, UsageEvent)
    assert [(e.index, e.line) for e in errors] == [(1, 2)]
    assert errors[0].as_json()["errors"][0].startswith("malformed JSON")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b"x" * 101, "application/json", 413, "the limit is 100"),
        (b"[" + b"{}," * 4 + b"{}]", "application/json", 413, "holds 5 events; the limit is 4"),
        (b"{}", "application/x-www-form-urlencoded", 415, "application/x-ndjson"),
        (b"{}", None, 415, r"'\(none\)'"),
        (b"[1, 2", "application/json", 400, "malformed JSON"),
        (b'"an event"', "application/json", 400, "got str"),
        (b"[]", "application/json", 400, "no events"),
        (b"\n\n", "application/x-ndjson", 400, "no events"),
        (b'{"cost_usd": NaN}', "application/json", 400, "malformed JSON"),
    ],
)
def test_a_body_that_cannot_be_read_as_events(
    body: bytes, content_type: str | None, status: int, message: str
) -> None:
    with pytest.raises(BodyError, match=message) as caught:
        parse_items(body, content_type, 100, 4)
    assert caught.value.status == status


def test_a_rejection_is_bounded_and_says_nothing_was_published() -> None:
    errors = [ItemError(i, ["x: bad"]) for i in range(MAX_ITEM_ERRORS + 5)]
    answer = rejection(errors, 1000)
    assert (
        answer["error"] == f"{MAX_ITEM_ERRORS + 5} of 1000 event(s) invalid; nothing was published"
    )
    assert len(answer["errors"]) == MAX_ITEM_ERRORS and answer["more_errors"] == 5


def test_receipt_ids_are_each_familys_id() -> None:
    assert receipt_id(example(UsageEvent, event_id="use-1")) == "use-1"
    assert receipt_id(example(AIRequest, request_id="req-1")) == "req-1"
    assert receipt_id(example(WorldEvent, event_id="wev-1")) == "wev-1"
    assert receipt_id(example(CacheInvalidation, id="inv-1")) == "inv-1"
    assert receipt_id(example(WorldTick, world_id="w-1", tick=9)) == "w-1:9"


def test_a_world_event_payload_is_checked_against_its_type() -> None:
    good = orjson.loads(encode(example(WorldEvent, type="location_created")))
    no_kind = orjson.loads(encode(example(WorldEvent, type="location_created")))
    del no_kind["payload"]["kind"]
    body = orjson.dumps(good) + b"\n" + orjson.dumps(no_kind) + b"\n"
    events, errors = validate_items(
        parse_items(body, "application/x-ndjson", LIMIT, 10), WorldEvent
    )
    assert len(events) == 1
    assert errors == [ItemError(1, ["payload.kind: Field required"], line=2)]
