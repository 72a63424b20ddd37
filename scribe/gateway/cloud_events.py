"""What a CloudEvents POST means, with no I/O: structured mode (one event), batch mode (a JSON
array of structured events) or binary mode (attributes in `ce-*` headers, `data` in the body),
read with the CloudEvents SDK. An event's `type` names its topic (`TYPES`); its `data` is the
Scribe event, checked exactly as `POST /v1/events/{topic}` checks it (`ingest.check_item`).

As there, a request is accepted or rejected whole, with the errors listed per item.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from cloudevents.core.base import BaseCloudEvent, EventFactory
from cloudevents.core.bindings import http, kafka
from cloudevents.core.exceptions import (
    BaseCloudEventException,
    CloudEventValidationError,
    MissingRequiredAttributeError,
)
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from schemas import DecodeError, parse_json
from schemas.events import Event
from scribe.gateway.ingest import BodyError, Item, ItemError, check_item, media_type
from topics.catalog import AI_REQUESTS, USAGE_EVENTS, WORLD_EVENTS, TopicSpec
from topics.publisher import Header

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
DATA_CONTENT_TYPE = "application/json"  # what the published record's value is
# The namespace of the event ids derived from a CloudEvent's source and id (`event_id_of`).
EVENT_ID_NAMESPACE = uuid.UUID("9a7910d5-81bf-4bbc-9c88-71a3f1bbc1e7")


@dataclass(frozen=True)
class CloudEventType:
    """A CloudEvents `type` the gateway accepts: the topic its `data` goes to, and the field of
    that topic's event that the CloudEvent's identity (source + id) fills."""

    name: str
    topic: TopicSpec
    identity_field: str


TYPES: dict[str, CloudEventType] = {
    t.name: t
    for t in (
        CloudEventType("com.scribe.usage.v1", USAGE_EVENTS, "event_id"),
        CloudEventType("com.scribe.world.event.v1", WORLD_EVENTS, "event_id"),
        CloudEventType("com.scribe.ai.request.v1", AI_REQUESTS, "request_id"),
    )
}


def event_id_of(source: str, event_id: str) -> str:
    """The Scribe id of the CloudEvent (source, id): a UUIDv5 of both. The pair is the
    CloudEvent's identity, so a producer's retry maps to the same id and the ledger (which
    dedupes by event_id) counts it once. Not the pair itself: a source is any URI-reference and
    an id any string, which the Identifier pattern (and its 128 characters) does not always
    allow; the JSON array keeps ("a:b", "c") and ("a", "b:c") apart."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, orjson.dumps([source, event_id]).decode()))


class _CloudEventError(ValueError):
    """An item of a batch that is not a CloudEvent object at all."""


class _ExactJSONFormat(JSONFormat):
    """The SDK's JSON event format, but with JSON parsed by `schemas.codec`, numbers as Decimal:
    the SDK parses with the standard json module, whose floats the money fields refuse (and
    would round). The attributes are still read, defaulted and checked by the SDK."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def read_data(self, body: bytes, datacontenttype: str | None) -> Any:
        return parse_json(body, limit=self.max_bytes) if body else None

    def read_envelope(self, event_factory: EventFactory, envelope: Any) -> BaseCloudEvent:
        """A structured-mode event already parsed: the SDK reads its attributes (re-serialized
        without `data`, so it never parses the data) and the exact `data` is put back."""
        if not isinstance(envelope, dict):
            raise _CloudEventError(f"expected a CloudEvent object, got {type(envelope).__name__}")
        attributes = {name: value for name, value in envelope.items() if name != "data"}

        def with_exact_data(read: dict[str, Any], decoded: Any) -> BaseCloudEvent:
            # `decoded`: None, or the bytes of `data_base64`
            return event_factory(read, envelope.get("data", decoded))

        return super().read(with_exact_data, orjson.dumps(attributes, default=str))


def _received(attributes: dict[str, Any], data: Any) -> CloudEvent:
    """The SDK's v1.0 event; but where the SDK, for producers, fills a missing id (a new UUID)
    and specversion, a received event must carry both: without an id it has no identity to be
    deduplicated by."""
    missing: dict[str, list[BaseCloudEventException]] = {
        name: [MissingRequiredAttributeError(name)]
        for name in ("id", "specversion")
        if name not in attributes
    }
    try:
        event = CloudEvent(dict(attributes), data)
    except CloudEventValidationError as exc:
        raise CloudEventValidationError({**missing, **exc.errors}) from None
    if missing:
        raise CloudEventValidationError(missing)
    return event


@dataclass(frozen=True)
class Received:
    """One CloudEvent of a request, or why it could not be read as one."""

    event: BaseCloudEvent | None
    errors: list[str]


def _reading(read: Callable[[], BaseCloudEvent]) -> Received:
    try:
        return Received(read(), [])
    except CloudEventValidationError as exc:
        return Received(None, [f"{name}: {errors[0]}" for name, errors in exc.errors.items()])
    except DecodeError as exc:
        return Received(None, [f"data: {exc.reason}"])
    except _CloudEventError as exc:
        return Received(None, [str(exc)])
    except (ValueError, TypeError) as exc:  # the SDK's reading of `time` or `data_base64`
        return Received(None, [f"unreadable attribute (time must be RFC 3339): {exc}"])


def read_cloudevents(
    headers: Mapping[str, str], body: bytes, max_bytes: int, max_events: int
) -> list[Received]:
    """The body's CloudEvents, in order. Raises `BodyError` with 413 (too large), 415 (neither
    structured, batch nor binary mode) or 400 (a structured or batch body that is not JSON)."""
    if len(body) > max_bytes:
        raise BodyError(413, f"the body is {len(body):,} bytes; the limit is {max_bytes:,}")
    lowered = {name.lower(): value for name, value in headers.items()}
    kind = media_type(lowered.get("content-type"))
    exact = _ExactJSONFormat(max_bytes)
    if kind in (STRUCTURED, BATCH):
        try:
            value = parse_json(body, limit=max_bytes)
        except DecodeError as exc:
            raise BodyError(400, exc.reason) from None
        if kind == STRUCTURED:
            return [_reading(partial(exact.read_envelope, _received, value))]
        if not isinstance(value, list):
            raise BodyError(400, f"a batch is a JSON array of events, got {type(value).__name__}")
        if not value:
            raise BodyError(400, "the batch holds no events")
        if len(value) > max_events:
            raise BodyError(
                413, f"the batch holds {len(value):,} events; the limit is {max_events:,}"
            )
        return [_reading(partial(exact.read_envelope, _received, v)) for v in value]
    ce_headers = {k: v for k, v in lowered.items() if k.startswith(http.CE_PREFIX)}
    # No Content-Type is JSON too: the SDK sends none for an event without datacontenttype.
    if ce_headers and (not kind or JSONFormat.JSON_CONTENT_TYPE_PATTERN.match(kind)):
        message = http.HTTPMessage({**ce_headers, "content-type": kind or DATA_CONTENT_TYPE}, body)
        return [_reading(partial(http.from_binary, message, exact, _received))]
    raise BodyError(
        415,
        f"unsupported Content-Type {kind or '(none)'!r} for CloudEvents: send {STRUCTURED} (one "
        f"event), {BATCH} (an array of them), or binary mode: ce-id, ce-source, ce-type, "
        "ce-specversion headers with the data as application/json",
    )


@dataclass(frozen=True)
class Accepted:
    """A CloudEvent turned into the Scribe event it carries, with the record headers of the
    CloudEvents Kafka binding (binary mode) that go with it."""

    type: CloudEventType
    event: Event
    headers: list[Header]


def accepted_types() -> str:
    return ", ".join(f"{t.name} ({t.topic.name})" for t in TYPES.values())


def event_type(received: Received) -> CloudEventType | None:
    return TYPES.get(received.event.get_type()) if received.event is not None else None


def translate(index: int, received: Received) -> Accepted | ItemError:
    """The Scribe event in a CloudEvent's `data`, validated against its type's topic. Its id
    field is the one derived from source + id, also where `data` carries its own: source + id
    is the CloudEvent's identity, the one a CloudEvents producer retries with."""
    if received.event is None:
        return ItemError(index, received.errors)
    cloud_event = received.event
    known = event_type(received)
    if known is None:
        return ItemError(
            index,
            [f"type: {cloud_event.get_type()!r} is not accepted; send one of {accepted_types()}"],
        )
    data = cloud_event.get_data()
    if isinstance(data, bytes):  # from `data_base64`
        try:
            data = parse_json(data, limit=len(data))
        except DecodeError as exc:
            return ItemError(index, [f"data: {exc.reason}"])
    if not isinstance(data, dict):
        got = "nothing" if data is None else f"a JSON {type(data).__name__}"
        return ItemError(index, [f"data: expected the {known.topic.name} event object, got {got}"])
    identity = event_id_of(cloud_event.get_source(), cloud_event.get_id())
    checked = check_item(index, Item({**data, known.identity_field: identity}), known.topic.model)
    if isinstance(checked, ItemError):
        return ItemError(index, [_in_data(line) for line in checked.errors])
    return Accepted(known, checked, kafka_headers(cloud_event))


def _in_data(error: str) -> str:
    """`input_tokens: ...` as `data.input_tokens: ...`: the envelope has fields of the same
    names (`type`, `id`)."""
    if error.startswith("(event): "):
        return "data: " + error.removeprefix("(event): ")
    return error if error.startswith("... ") else f"data.{error}"


def kafka_headers(cloud_event: BaseCloudEvent) -> list[Header]:
    """The event's attributes as the SDK's Kafka binding writes them in binary mode (`ce_id`,
    `ce_source`, `ce_type`, `ce_time`, `ce_specversion`, extensions, and `content-type`), so a
    CloudEvents consumer reads the record as the same event. The value is the validated Scribe
    event as JSON, whatever content type the data came in."""
    attributes = {**cloud_event.get_attributes(), "datacontenttype": DATA_CONTENT_TYPE}
    message = kafka.to_binary(CloudEvent(attributes), JSONFormat())
    return list(message.headers.items())
