"""The usage flow's fast decode (`schemas.usage_wire`) must give exactly the outcome of the
model's decode (`schemas.codec.decode` into `UsageEvent`): the same values of the same types for
what is accepted, the same kind and reason for what is refused."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import DecodeError, decode, encode
from schemas.events import UsageEvent
from schemas.examples import example
from schemas.usage_wire import DecodedUsage, decode_usage
from tests.faults.corpus import corpus
from tests.schemas.json_schema_strategy import from_schema
from tests.schemas.test_decode_fuzz import FUZZ, _schema, mutated
from topics.catalog import USAGE_EVENTS

FIELDS = [name for name in UsageEvent.model_fields if name != "schema_version"]


def outcome(decoder: Any, raw: bytes) -> tuple[Any, ...]:
    try:
        event = decoder(raw)
    except DecodeError as error:
        return ("refused", error.kind, error.reason)
    values = [getattr(event, name) for name in FIELDS]
    # repr as well: Decimal('1.0') == Decimal('1'), but the ledger would store what it was given
    return ("accepted", *values, *(type(v) for v in values), *(repr(v) for v in values))


def same(raw: bytes) -> None:
    assert outcome(decode_usage, raw) == outcome(lambda r: decode(r, UsageEvent), raw), raw


def fields(**changes: Any) -> bytes:
    return orjson.dumps({**orjson.loads(encode(example(UsageEvent))), **changes})


def token(name: str, text: bytes) -> bytes:
    return fields(**{name: "__T__"}).replace(b'"__T__"', text)


def test_a_valid_event_takes_the_fast_path() -> None:
    assert isinstance(decode_usage(encode(example(UsageEvent))), DecodedUsage)


@pytest.mark.parametrize("case", corpus(USAGE_EVENTS, "wire"), ids=lambda c: c.name)
def test_every_fault_corpus_case_has_the_models_outcome(case: Any) -> None:
    if case.value is not None:
        same(case.value)


EDGES = [
    fields(event_id="user-1\n"),  # Python's `$` would match before the newline
    fields(model="gpt\n"),
    fields(key_id="k\n"),
    fields(world_id="w\n"),
    fields(world_id=None, key_id=None, latency_ms=None, priority=None),
    fields(cost_usd=" 1.25 "),
    fields(cost_usd="0" * 39 + "1.5"),  # over 40 characters: refused as a string
    fields(cost_usd="1E-12"),
    fields(cost_usd="-0"),
    fields(cost_usd=""),
    fields(cost_usd=True),
    fields(cost_usd=[1]),
    fields(cost_usd={"a": 1}),
    token("cost_usd", b"5"),
    token("cost_usd", b"-0.0"),
    token("cost_usd", b"1.000000000000"),
    token("cost_usd", b"1e-12"),
    token("cost_usd", b"1E+3"),
    token("cost_usd", b"0.0000000000001"),
    token("cost_usd", b"1000000.000000000001"),
    token("input_tokens", b"1.0"),
    token("input_tokens", b"-0"),
    token("images", b"1001"),
    token("latency_ms", b"3600001"),
    token("schema_version", b"1.0"),
    token("schema_version", b"true"),
    fields(schema_version=1),
    fields(free_tier=1),
    fields(occurred_at="2026-06-30T23:30:00.123456+05:30"),
    fields(occurred_at="2026-06-30 23:30:00Z"),
    fields(occurred_at="2026-06-30T23:30:00z"),
    fields(occurred_at="2026-06-30"),
    fields(priority="URGENT"),
    fields(service="s" * 129),
    fields(service="\U0001f600" * 128),
    b'{"event_id":"a","event_id":"b"}',
    fields(event_id="x")[:-1] + b',"event_id":"y"}',  # a key twice: the last one wins
    b'{"event_id":"a" ' + fields()[1:],
    b" " + fields() + b"\n",
]


@pytest.mark.parametrize("raw", EDGES, ids=lambda r: r[-40:].decode(errors="replace"))
def test_edge_cases_have_the_models_outcome(raw: bytes) -> None:
    same(raw)


@FUZZ
@given(raw=mutated("usage_event"))
def test_mutated_events_have_the_models_outcome(raw: bytes) -> None:
    same(raw)


@FUZZ
@given(instance=from_schema(_schema("usage_event")))
def test_schema_instances_have_the_models_outcome(instance: dict[str, Any]) -> None:
    same(json.dumps(instance).encode())


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_have_the_models_outcome(raw: bytes) -> None:
    same(raw)
