from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sinks.cdn.backoff import backoff_seconds, retry_after_seconds
from sinks.cdn.rate_limit import TokenBucket

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("Sun, 01 Mar 2026 12:00:07 GMT", 7.0),
        ("Sun, 01 Mar 2026 11:59:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


def test_backoff_doubles_up_to_the_cap_within_jitter() -> None:
    assert [backoff_seconds(a, 0.2, 1.0, 0.999999) for a in (1, 2, 3, 4)] == pytest.approx(
        [0.2, 0.4, 0.8, 1.0]
    )
    assert backoff_seconds(3, 0.2, 1.0, 0.0) == pytest.approx(0.4)


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(0.0) == pytest.approx(0.1)
    assert bucket.reserve(0.0) == pytest.approx(0.2)
    # After a quiet second the bucket is full again, never fuller.
    assert [bucket.reserve(2.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(2.0) == pytest.approx(0.1)


def test_hold_makes_every_later_request_wait() -> None:
    bucket = TokenBucket(rate=100, burst=10, now=0.0)
    bucket.hold_until(2.5)
    assert bucket.reserve(1.0) == pytest.approx(1.5)
    assert bucket.held_for(2.0) == pytest.approx(0.5)
    bucket.hold_until(1.0)  # an earlier hold does not shorten it
    assert bucket.held_for(2.0) == pytest.approx(0.5)
    assert bucket.reserve(3.0) == 0.0


def test_bucket_needs_a_rate() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(rate=0, burst=1, now=0.0)
