"""A per-provider token bucket. Pure: the caller passes the monotonic time and sleeps the
returned wait. `hold_until` makes every later request wait, which is how a 429's
`Retry-After` pauses the whole provider rather than one request."""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = now
        self._held_until = now

    def reserve(self, now: float) -> float:
        """Take a token; return how long to wait before using it. Reservations queue: the
        tokens may go negative, and each later caller waits its turn."""
        self._refill(now)
        self._tokens -= 1
        wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        return max(wait, self._held_until - now)

    def hold_until(self, when: float) -> None:
        self._held_until = max(self._held_until, when)

    def held_for(self, now: float) -> float:
        return max(0.0, self._held_until - now)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._updated = now
