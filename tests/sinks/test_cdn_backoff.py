from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from sinks.cdn.backoff import RetryDeadline, backoff_seconds, retry_after_seconds
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


def _fail_until_gone(retry: RetryDeadline, start: float, jitter: float) -> list[float]:
    """Fail at `start`, then again each time the wait runs out (a clock that only moves when
    told): the times of the attempts until `failed` says stop."""
    now, times = start, []
    while True:
        times.append(now)
        delay = retry.failed(now, None, jitter)
        if delay is None:
            return times
        now += delay


def test_retries_back_off_to_the_cap_until_the_deadline_then_stop() -> None:
    retry = RetryDeadline(deadline_s=900, base=0.2, cap=30, max_retry_after=60)
    times = _fail_until_gone(retry, start=1000.0, jitter=0.999999)
    waits = [b - a for a, b in itertools.pairwise(times)]
    assert waits[:4] == pytest.approx([0.2, 0.4, 0.8, 1.6])
    assert max(waits) == pytest.approx(30)
    # The last attempt is made at the deadline itself, none after it.
    assert times[-1] == pytest.approx(1900.0)
    assert all(t <= 1900.0 for t in times)
    assert retry.left(times[-1]) == 0
    assert "past the retry deadline (SCRIBE_CDN_RETRY_DEADLINE_S=900)" in retry.gave_up_because(
        times[-1]
    )
    # 30 s apart for most of 15 minutes: about 40 attempts, not thousands.
    assert 30 < len(times) < 50


def test_jitter_keeps_waits_between_half_and_full() -> None:
    for jitter in (0.0, 0.5):
        retry = RetryDeadline(deadline_s=900, base=1, cap=8, max_retry_after=60)
        waits = [retry.failed(float(i), None, jitter) for i in range(6)]
        full = [1, 2, 4, 8, 8, 8]
        assert waits == pytest.approx([w * (0.5 + jitter / 2) for w in full])


def test_the_deadline_counts_from_the_first_failure() -> None:
    retry = RetryDeadline(deadline_s=60, base=1, cap=10, max_retry_after=60)
    assert retry.left(5.0) == 60  # nothing failed yet
    assert retry.failed(100.0, None, 0.999999) == pytest.approx(1)
    assert retry.left(130.0) == pytest.approx(30)
    assert retry.failed(155.0, None, 0.999999) == pytest.approx(2)
    # A wait never runs past the deadline.
    assert retry.failed(159.5, None, 0.999999) == pytest.approx(0.5)
    assert retry.failed(160.0, None, 0.999999) is None


def test_retry_after_is_honored_up_to_its_cap_and_the_deadline() -> None:
    retry = RetryDeadline(deadline_s=100, base=0.2, cap=5, max_retry_after=20)
    assert retry.failed(0.0, 7.0, 0.0) == 7.0
    assert retry.failed(7.0, 45.0, 0.0) == 20.0
    assert retry.failed(95.0, 20.0, 0.0) == 5.0


def test_an_attempt_cap_ends_retries_before_the_deadline() -> None:
    retry = RetryDeadline(deadline_s=900, base=0.2, cap=5, max_retry_after=60, max_attempts=3)
    assert retry.failed(0.0, None, 0.0) is not None
    assert retry.failed(1.0, None, 0.0) is not None
    assert retry.failed(2.0, None, 0.0) is None
    assert retry.gave_up_because(2.0) == "gave up after 3 attempts (SCRIBE_CDN_MAX_ATTEMPTS=3)"
