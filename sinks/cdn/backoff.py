"""When to try a purge again: the server's `Retry-After` when it sends one, else capped
exponential backoff with jitter. Pure."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date); None when
    absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_seconds(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Delay after failed attempt `attempt` (1-based): base, 2*base, 4*base ... up to cap,
    scaled into [half, full] by `jitter` in [0, 1)."""
    delay = min(cap, base * 2.0 ** (attempt - 1))
    return delay * (0.5 + jitter / 2)


class RetryDeadline:
    """The retries of one purge: capped exponential backoff with jitter (or the server's
    `Retry-After`) until `deadline_s` after its first failure, then no more. Optionally also
    capped at `max_attempts`. Pure: the caller passes the time (`now`, monotonic seconds)."""

    def __init__(
        self,
        deadline_s: float,
        base: float,
        cap: float,
        max_retry_after: float,
        max_attempts: int | None = None,
    ) -> None:
        self.deadline_s = deadline_s
        self.base = base
        self.cap = cap
        self.max_retry_after = max_retry_after
        self.max_attempts = max_attempts
        self.attempts = 0  # failed attempts so far
        self.first_failure: float | None = None

    def left(self, now: float) -> float:
        """Seconds until the deadline (the whole deadline before the first failure)."""
        if self.first_failure is None:
            return self.deadline_s
        return max(0.0, self.first_failure + self.deadline_s - now)

    def failed(self, now: float, retry_after: float | None, jitter: float) -> float | None:
        """Count a failed attempt made at `now`: the seconds to wait before the next one, or
        None when there is none (the deadline has passed, or the attempt cap is reached).
        The last wait ends at the deadline itself, so one attempt is made there."""
        if self.first_failure is None:
            self.first_failure = now
        self.attempts += 1
        left = self.left(now)
        if left <= 0 or (self.max_attempts is not None and self.attempts >= self.max_attempts):
            return None
        if retry_after is not None:
            delay = min(retry_after, self.max_retry_after)
        else:
            delay = backoff_seconds(self.attempts, self.base, self.cap, jitter)
        return min(delay, left)

    def gave_up_because(self, now: float) -> str:
        """Why `failed` returned None, for the dead letter."""
        tries = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        elapsed = 0.0 if self.first_failure is None else now - self.first_failure
        if self.left(now) > 0:
            return f"gave up after {tries} (SCRIBE_CDN_MAX_ATTEMPTS={self.max_attempts})"
        return (
            f"still failing after {tries} over {elapsed:.0f} s: past the retry deadline "
            f"(SCRIBE_CDN_RETRY_DEADLINE_S={self.deadline_s:g})"
        )
