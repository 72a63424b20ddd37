"""CloudEvents bodies, written by the CloudEvents SDK as a producer would: each mode gives the
Scribe event in `data` with its id derived from source + id; errors per item; money exact."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings import http, kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from schemas import encode
from schemas.events import AIRequest, UsageEvent, WorldEvent
from schemas.examples import example
from scribe.gateway.cloud_events import (
    BATCH,
    TYPES,
    Accepted,
    Received,
    event_id_of,
    read_cloudevents,
    translate,
)
from scribe.gateway.ingest import BodyError, ItemError

LIMIT = 1024 * 1024
USAGE = "com.scribe.usage.v1"


def _data(model: type[Any], **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(encode(example(model, **overrides)))
    return data


def _event(data: dict[str, Any], type_: str = USAGE, **attributes: Any) -> CloudEvent:
    return CloudEvent({"type": type_, "source": "/billing/eu", **attributes}, data)


def _read(message: http.HTTPMessage, max_events: int = 10) -> list[Received]:
    return read_cloudevents(message.headers, message.body, LIMIT, max_events)


def _accepted(received: list[Received]) -> list[Accepted]:
    translated = [translate(i, r) for i, r in enumerate(received)]
    assert all(isinstance(t, Accepted) for t in translated), translated
    return [t for t in translated if isinstance(t, Accepted)]


def _batch(*events: CloudEvent) -> http.HTTPMessage:
    """SDK 2.2.0 writes no batch: a batch is the array of its events' structured bodies."""
    body = b"[" + b",".join(http.to_structured_event(e).body for e in events) + b"]"
    return http.HTTPMessage({"content-type": BATCH}, body)


def test_structured_batch_and_binary_give_the_same_event_with_the_id_from_source_and_id() -> None:
    data = _data(UsageEvent, user_id="u-1")
    event = _event(data, id="A-1")
    structured = _accepted(_read(http.to_structured_event(event)))
    batch = _accepted(_read(_batch(event)))
    binary = _accepted(_read(http.to_binary_event(event)))
    expected = UsageEvent.model_validate(data | {"event_id": event_id_of("/billing/eu", "A-1")})
    assert [a.event for a in structured + batch + binary] == [expected] * 3
    assert {a.type.topic.name for a in structured + batch + binary} == {"usage.events"}


def test_each_type_goes_to_its_topic_and_fills_its_identity_field() -> None:
    events = [
        _event(_data(UsageEvent), USAGE, id="1"),
        _event(_data(WorldEvent), "com.scribe.world.event.v1", id="2"),
        _event(_data(AIRequest), "com.scribe.ai.request.v1", id="3"),
    ]
    accepted = _accepted(_read(_batch(*events)))
    assert [a.type.topic.name for a in accepted] == ["usage.events", "world.events", "ai.requests"]
    usage, world, request = (a.event for a in accepted)
    assert isinstance(usage, UsageEvent) and isinstance(world, WorldEvent)
    assert isinstance(request, AIRequest)
    ids = [usage.event_id, world.event_id, request.request_id]
    assert ids == [event_id_of("/billing/eu", n) for n in ("1", "2", "3")]
    assert set(TYPES) == {e.get_type() for e in events}


def test_the_derived_id_is_stable_distinct_and_fits_the_identifier_pattern() -> None:
    assert event_id_of("/a", "1") == event_id_of("/a", "1")
    ids = {event_id_of(s, i) for s, i in [("/a", "1"), ("/b", "1"), ("/a", "2")]}
    assert len(ids) == 3
    assert event_id_of("a:b", "c") != event_id_of("a", "b:c")
    # A source and id the schema's Identifier would refuse as they are still give a valid event.
    odd = _event(_data(UsageEvent), source="https://x.example/a b?c=#", id="id with spaces " * 20)
    (accepted,) = _accepted(_read(http.to_structured_event(odd)))
    assert accepted.event.event_id == event_id_of(odd.get_source(), odd.get_id())  # type: ignore[attr-defined]


def test_money_in_data_is_read_exactly_never_through_a_float() -> None:
    exact = b"999999.999999999999"  # 18 significant digits: a float cannot hold them
    message = http.to_structured_event(_event(_data(UsageEvent, cost_usd=Decimal("0.5"))))
    body = message.body.replace(b'"cost_usd": "0.5"', b'"cost_usd": ' + exact)
    assert exact in body
    (accepted,) = _accepted(_read(http.HTTPMessage(message.headers, body)))
    assert isinstance(accepted.event, UsageEvent)
    assert accepted.event.cost_usd == Decimal(exact.decode()) != Decimal(float(exact))
    binary = http.to_binary_event(_event(_data(UsageEvent, cost_usd=Decimal("0.5"))))
    binary_body = binary.body.replace(b'"cost_usd": "0.5"', b'"cost_usd": ' + exact)
    (accepted,) = _accepted(_read(http.HTTPMessage(binary.headers, binary_body)))
    assert accepted.event.cost_usd == Decimal(exact.decode())  # type: ignore[attr-defined]


def test_every_bad_item_is_reported_with_its_index() -> None:
    good = _event(_data(UsageEvent))
    bad_data = _event(_data(UsageEvent) | {"input_tokens": -1})
    unknown = _event(_data(UsageEvent), "com.example.usage")
    no_data = CloudEvent({"type": USAGE, "source": "/s"})
    message = _batch(good, bad_data, unknown, no_data)
    body = message.body[:-1] + b',7,{"type":"' + USAGE.encode() + b'","source":"/s"}]'
    received = _read(http.HTTPMessage(message.headers, body))
    translated = [translate(i, r) for i, r in enumerate(received)]
    assert isinstance(translated[0], Accepted)
    assert translated[1:] == [
        ItemError(1, ["data.input_tokens: Input should be greater than or equal to 0"]),
        ItemError(
            2,
            [
                "type: 'com.example.usage' is not accepted; send one of com.scribe.usage.v1 "
                "(usage.events), com.scribe.world.event.v1 (world.events), "
                "com.scribe.ai.request.v1 (ai.requests)"
            ],
        ),
        ItemError(3, ["data: expected the usage.events event object, got nothing"]),
        ItemError(4, ["expected a CloudEvent object, got int"]),
        # The SDK would fill a missing id with a fresh UUID: then a retry would count twice.
        ItemError(
            5,
            [
                "id: Missing required attribute: 'id'",
                "specversion: Missing required attribute: 'specversion'",
            ],
        ),
    ]


def test_bad_attributes_and_binary_data_are_item_errors() -> None:
    event = _event(_data(UsageEvent))
    binary = http.to_binary_event(event)
    wrong_version = binary.headers | {"ce-specversion": "0.3"}
    bad_time = binary.headers | {"ce-time": "yesterday"}
    for headers, body, expected in [
        (wrong_version, binary.body, "specversion: Attribute 'specversion' must be '1.0'"),
        (bad_time, binary.body, "unreadable attribute (time must be RFC 3339)"),
        (binary.headers, b'{"event_id":', "data: malformed JSON"),
    ]:
        (received,) = _read(http.HTTPMessage(headers, body))
        checked = translate(0, received)
        assert isinstance(checked, ItemError) and checked.index == 0
        assert checked.errors[0].startswith(expected), checked.errors


def test_bodies_that_are_no_cloudevents_at_all_are_refused_whole() -> None:
    event = _event(_data(UsageEvent))
    cases = [
        (http.HTTPMessage({"content-type": "text/plain"}, b"{}"), 415, "unsupported Content-Type"),
        # JSON without ce- headers is Scribe's own format: /v1/events/{topic} takes it.
        (http.HTTPMessage({"content-type": "application/json"}, b"{}"), 415, "binary mode"),
        (
            http.HTTPMessage(
                http.to_binary_event(event).headers | {"content-type": "text/plain"}, b"x"
            ),
            415,
            "unsupported",
        ),
        (http.HTTPMessage({"content-type": BATCH}, b"[]"), 400, "the batch holds no events"),
        (http.HTTPMessage({"content-type": BATCH}, b"{}"), 400, "a batch is a JSON array"),
        (http.HTTPMessage({"content-type": BATCH}, b"[{"), 400, "malformed JSON"),
        (_batch(event, event, event), 413, "the batch holds 3 events; the limit is 2"),
    ]
    for message, status, text in cases:
        with pytest.raises(BodyError) as refused:
            _read(message, max_events=2)
        assert (refused.value.status, text in refused.value.message) == (status, True), message


def test_the_kafka_headers_are_the_sdk_binding_of_the_same_event() -> None:
    event = _event(_data(UsageEvent, user_id="u-9"), id="A-9", subject="invoice-7")
    (accepted,) = _accepted(_read(http.to_structured_event(event)))
    headers = dict(accepted.headers)
    assert {"ce_id", "ce_source", "ce_type", "ce_time", "ce_specversion", "content-type"} <= set(
        headers
    )
    assert headers["content-type"] == b"application/json"
    record = kafka.KafkaMessage(headers, b"u-9", encode(accepted.event))
    read = kafka.from_binary(record, JSONFormat())
    for attribute in ("id", "source", "type", "time", "specversion", "subject"):
        assert read.get_attributes()[attribute] == event.get_attributes()[attribute], attribute
    assert UsageEvent.model_validate(read.get_data()) == accepted.event
