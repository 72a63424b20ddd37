"""The worker's event-loop probe: a loop held by blocking work shows as lateness."""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CollectorRegistry, Histogram

from scribe.observability import probe_loop_lag


def late_by_over(registry: CollectorRegistry, bound: str) -> float:
    """Wake-ups observed later than `bound` seconds."""
    count = registry.get_sample_value("loop_lag_seconds_count") or 0.0
    return count - (registry.get_sample_value("loop_lag_seconds_bucket", {"le": bound}) or 0.0)


async def test_a_loop_held_for_300_ms_is_observed_late_by_about_that() -> None:
    registry = CollectorRegistry()
    histogram = Histogram(
        "loop_lag_seconds", "lateness", registry=registry, buckets=(0.05, 0.25, 1.0)
    )
    probe = asyncio.create_task(probe_loop_lag(histogram, 0.02))
    try:
        await asyncio.sleep(0.2)
        assert (registry.get_sample_value("loop_lag_seconds_count") or 0.0) >= 3
        before = late_by_over(registry, "0.25")
        sum_before = registry.get_sample_value("loop_lag_seconds_sum") or 0.0
        time.sleep(0.3)  # noqa: ASYNC251 - the blocking call whose stall the probe must see
        await asyncio.sleep(0.1)
    finally:
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
    assert late_by_over(registry, "0.25") - before == 1
    added = (registry.get_sample_value("loop_lag_seconds_sum") or 0.0) - sum_before
    assert added >= 0.25
