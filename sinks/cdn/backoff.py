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
