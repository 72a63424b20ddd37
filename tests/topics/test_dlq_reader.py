"""Dead letters read back from their headers, and the filters `scribe dlq` selects them with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import ConsumerRecord

from topics.catalog import USAGE_EVENTS, UnknownTopicError
from topics.dlq import H_ORIGINAL_SIZE, dead_letter_headers
from topics.dlq_reader import DeadLetter, DeadLetterFilter, dead_letter_source, parse_since

NOW = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)


def record(
    headers: list[tuple[str, bytes]], value: bytes | None = b"{}", timestamp: int = 0
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="usage.events.dlq",
        partition=2,
        offset=41,
        timestamp=timestamp,
        timestamp_type=0,
        key=b"u-1",
        value=value,
        checksum=None,
        serialized_key_size=3,
        serialized_value_size=len(value or b""),
        headers=tuple(headers),
    )


def letter(kind: str = "unpriced", failed_at: datetime | None = NOW) -> DeadLetter:
    headers = [(k, v) for k, v in dead_letter_headers(kind, "why", "usage.events", 1, 7)]
    if failed_at is None:
        headers = [(k, v) for k, v in headers if k != "scribe-failed-at"]
    else:
        headers = [
            (k, failed_at.isoformat().encode() if k == "scribe-failed-at" else v)
            for k, v in headers
        ]
    return DeadLetter.from_record(record(headers, timestamp=-1))


def test_a_dead_letter_carries_what_the_writer_put_in_its_headers() -> None:
    headers = dead_letter_headers("schema", "input_tokens: too small", "usage.events", 3, 1040)
    read = DeadLetter.from_record(record(headers))
    assert (read.kind, read.reason) == ("schema", "input_tokens: too small")
    assert (read.source_topic, read.source_partition, read.source_offset) == (
        "usage.events",
        3,
        1040,
    )
    assert read.failed_at is not None and read.failed_at.tzinfo is not None
    assert read.address == "usage.events.dlq/2/41"
    assert (read.key, read.value, read.truncated) == (b"u-1", b"{}", False)


def test_a_cut_original_is_marked_truncated() -> None:
    headers = [
        *dead_letter_headers("size", "too big", "usage.events", 0, 1),
        (H_ORIGINAL_SIZE, b"2000000"),
    ]
    read = DeadLetter.from_record(record(headers))
    assert read.truncated and read.original_size == 2_000_000


def test_a_record_without_our_headers_is_read_as_unknown_not_refused() -> None:
    read = DeadLetter.from_record(
        record([("scribe-source-offset", b"not a number")], timestamp=1_764_871_200_000)
    )
    assert read.kind == "(unknown)" and read.reason == ""
    assert read.source_topic == "usage.events"  # from the .dlq name
    assert read.source_offset is None
    assert read.failed_at == datetime.fromtimestamp(1_764_871_200, UTC)  # the record's time


def test_the_filter_selects_by_kind_and_failure_time() -> None:
    assert DeadLetterFilter().matches(letter())
    assert DeadLetterFilter(kind="unpriced").matches(letter("unpriced"))
    assert not DeadLetterFilter(kind="unpriced").matches(letter("schema"))
    since = DeadLetterFilter(since=NOW - timedelta(hours=1))
    assert since.matches(letter(failed_at=NOW))
    assert since.matches(letter(failed_at=NOW - timedelta(hours=1)))  # inclusive
    assert not since.matches(letter(failed_at=NOW - timedelta(hours=2)))
    assert not since.matches(letter(failed_at=None))  # no time known: not "since" anything
    both = DeadLetterFilter(kind="json", since=NOW - timedelta(hours=1))
    assert not both.matches(letter("unpriced", NOW))
    assert both.matches(letter("json", NOW))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("6h", NOW - timedelta(hours=6)),
        ("2d", NOW - timedelta(days=2)),
        ("1w", NOW - timedelta(weeks=1)),
        ("45s", NOW - timedelta(seconds=45)),
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T10:00:00", datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2026-12-01T10:00:00Z", datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("2026-12-01T12:00:00+02:00", datetime(2026, 12, 1, 10, tzinfo=UTC)),
    ],
)
def test_since_takes_an_age_or_an_iso_time(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "5y", "-3h", "12", ""])
def test_since_refuses_what_it_cannot_read_and_says_what_it_takes(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_since(text, NOW)


def test_a_topic_is_named_with_or_without_dlq() -> None:
    assert dead_letter_source("usage.events") is USAGE_EVENTS
    assert dead_letter_source("usage.events.dlq") is USAGE_EVENTS
    with pytest.raises(UnknownTopicError, match=r"usage\.event\.dlq"):
        dead_letter_source("usage.event.dlq")
    with pytest.raises(LookupError, match="output topic"):
        dead_letter_source("budget.alerts")
