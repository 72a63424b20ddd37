"""Circuit breakers: failure rate over a window, cooldown, one half-open probe; and backoff."""

from __future__ import annotations

import random

from agents.router.breaker import (
    BreakerConfig,
    Breakers,
    BreakerState,
    CircuitBreaker,
    backoff_delay,
)

CONFIG = BreakerConfig(failure_rate=0.5, min_calls=4, window_s=10, cooldown_s=5)


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read afresh (mypy would otherwise keep an earlier narrowing of the attribute)."""
    return breaker.state


def test_stays_closed_below_the_minimum_number_of_calls() -> None:
    breaker = CircuitBreaker(CONFIG)
    for t in range(3):
        breaker.record(t, ok=False)
    assert state(breaker) is BreakerState.CLOSED and breaker.allow(3)


def test_opens_at_the_failure_rate_and_refuses_during_cooldown() -> None:
    breaker = CircuitBreaker(CONFIG)
    for t, ok in enumerate([True, False, True, False]):
        breaker.record(t, ok=ok)
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow(4) and not breaker.allow(7.9)


def test_failures_outside_the_window_do_not_count() -> None:
    breaker = CircuitBreaker(CONFIG)
    breaker.record(0, ok=False)
    breaker.record(1, ok=False)
    for t in (20, 21, 22):
        breaker.record(t, ok=True)
    breaker.record(23, ok=False)
    assert state(breaker) is BreakerState.CLOSED


def test_one_probe_after_cooldown_success_closes() -> None:
    breaker = CircuitBreaker(CONFIG)
    for t in range(4):
        breaker.record(t, ok=False)
    assert breaker.allow(3 + 5)
    assert state(breaker) is BreakerState.HALF_OPEN
    assert not breaker.allow(8.1), "only one probe at a time"
    breaker.record(8.2, ok=True)
    assert state(breaker) is BreakerState.CLOSED and breaker.allow(8.3)


def test_a_failed_probe_opens_again_for_a_full_cooldown() -> None:
    breaker = CircuitBreaker(CONFIG)
    for t in range(4):
        breaker.record(t, ok=False)
    assert breaker.allow(8)
    breaker.record(9, ok=False)
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow(13.9) and breaker.allow(14)


def test_an_abandoned_probe_lets_the_next_caller_probe() -> None:
    breaker = CircuitBreaker(CONFIG)
    for t in range(4):
        breaker.record(t, ok=False)
    assert breaker.allow(8)
    breaker.abandon(8.1)
    assert breaker.allow(8.2) and state(breaker) is BreakerState.HALF_OPEN


def test_a_probe_that_never_reports_does_not_hold_the_breaker() -> None:
    breaker = CircuitBreaker(CONFIG)
    for t in range(4):
        breaker.record(t, ok=False)
    assert breaker.allow(8)
    assert not breaker.allow(8 + CONFIG.probe_timeout_s - 0.1)
    assert breaker.allow(8 + CONFIG.probe_timeout_s)


def test_breakers_are_per_service_and_model() -> None:
    breakers = Breakers(CONFIG)
    assert breakers.get("openrouter", "a") is breakers.get("openrouter", "a")
    assert breakers.get("openrouter", "a") is not breakers.get("openrouter", "b")
    for t in range(4):
        breakers.get("openrouter", "a").record(t, ok=False)
    assert breakers.states() == {
        ("openrouter", "a"): BreakerState.OPEN,
        ("openrouter", "b"): BreakerState.CLOSED,
    }


def test_backoff_is_jittered_exponential_and_capped() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        bound = min(5.0, 0.2 * 2**attempt)
        delays = [backoff_delay(attempt, 0.2, 5.0, rng) for _ in range(200)]
        assert all(0 <= d <= bound for d in delays)
        assert max(delays) > bound * 0.8, "full jitter spreads up to the bound"


def test_closed_for_counts_down_the_cooldown_then_the_probe() -> None:
    breaker = CircuitBreaker(CONFIG)
    assert breaker.closed_for(0) == 0
    for t in range(4):
        breaker.record(t, ok=False)  # opens at t=3
    assert breaker.closed_for(4) == 4 and not breaker.allow(4)
    assert breaker.allow(8)  # the probe goes (half-open) ...
    assert breaker.closed_for(9) == 4  # ... and holds the next call for its timeout
