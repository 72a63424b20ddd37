"""Circuit breakers per provider and model, and the retry backoff. Pure: the caller passes the
clock (monotonic seconds) and the random source."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from enum import IntEnum


class BreakerState(IntEnum):
    """Exported as the `scribe_breaker_state` gauge, worst highest (so `max` across workers
    shows the worst): 0 closed, 1 half-open, 2 open."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True)
class BreakerConfig:
    failure_rate: float = 0.5
    min_calls: int = 5
    window_s: float = 30.0
    cooldown_s: float = 30.0

    @property
    def probe_timeout_s(self) -> float:
        """A half-open probe that never reports back does not hold the breaker forever."""
        return max(self.cooldown_s, 5.0)


class CircuitBreaker:
    """Opens when, over the last `window_s`, at least `min_calls` calls were made and the share
    that failed reached `failure_rate`. Open, it refuses calls for `cooldown_s`; then one probe
    goes through (half-open): its success closes the breaker, its failure opens it again."""

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.state = BreakerState.CLOSED
        self._outcomes: deque[tuple[float, bool]] = deque()
        # Kept as outcomes come and go: counting the window on every call costs O(calls in it).
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started = 0.0

    def allow(self, now: float) -> bool:
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now - self._opened_at < self.config.cooldown_s:
                return False
            self.state = BreakerState.HALF_OPEN
            self._probe_started = now
            return True
        if now - self._probe_started >= self.config.probe_timeout_s:
            self._probe_started = now
            return True
        return False

    def closed_for(self, now: float) -> float:
        """Seconds until `allow` can next let a call through (0 when it can now)."""
        if self.state is BreakerState.OPEN:
            return max(0.0, self.config.cooldown_s - (now - self._opened_at))
        if self.state is BreakerState.HALF_OPEN:
            return max(0.0, self.config.probe_timeout_s - (now - self._probe_started))
        return 0.0

    def abandon(self, now: float) -> None:
        """The call `allow` let through was not made, or says nothing about the model's health
        (a rate-limited key, a refused request): a half-open breaker lets the next probe go."""
        if self.state is BreakerState.HALF_OPEN:
            self.state = BreakerState.OPEN
            self._opened_at = now - self.config.cooldown_s

    def record(self, now: float, ok: bool) -> None:
        if self.state is BreakerState.HALF_OPEN:
            if ok:
                self.state = BreakerState.CLOSED
                self._forget_outcomes()
            else:
                self._open(now)
            return
        if self.state is BreakerState.OPEN:
            return  # a call started before the breaker opened
        self._outcomes.append((now, ok))
        self._failures += not ok
        while self._outcomes and now - self._outcomes[0][0] > self.config.window_s:
            _, good = self._outcomes.popleft()
            self._failures -= not good
        calls = len(self._outcomes)
        if calls >= self.config.min_calls and self._failures / calls >= self.config.failure_rate:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self._opened_at = now
        self._forget_outcomes()

    def _forget_outcomes(self) -> None:
        self._outcomes.clear()
        self._failures = 0


class Breakers:
    """One breaker per (service, model), created on first use."""

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def get(self, service: str, model: str) -> CircuitBreaker:
        key = (service, model)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(self.config)
        return breaker

    def states(self) -> dict[tuple[str, str], BreakerState]:
        return {key: breaker.state for key, breaker in self._breakers.items()}


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, min(cap_s, base_s * 2**attempt))
