"""Settings of the invalidation flow, from `SCRIBE_INVALIDATION_*`."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.settings import env_number


@dataclass(frozen=True)
class InvalidationSettings:
    # Under load, identical targets read within this window become one purge (50-200 ms).
    window_seconds: float = 0.1
    # Load at which the window is used: below this many records/s (over the last window) an
    # invalidation is delivered as soon as it is read. 0: always the full window.
    busy_per_second: float = 10_000
    # The most records one window holds (while full, reading waits for the sinks).
    poll_records: int = 5_000
    # How long a fetch waits for records: short on the embedded broker, which answers only when
    # the wait runs out; on Kafka, which answers as records arrive, `Settings.fetch_wait_ms`.
    fetch_wait_ms: int = 20
    # How long a stopping worker keeps delivering what it already read.
    shutdown_seconds: float = 10.0
    # TTL of the values cache warming writes.
    warm_ttl_seconds: float = 300.0

    @classmethod
    def from_env(cls) -> InvalidationSettings:
        return cls(
            window_seconds=env_number("SCRIBE_INVALIDATION_WINDOW_MS", 100, 50, 200) / 1000,
            busy_per_second=env_number("SCRIBE_INVALIDATION_BUSY_PER_S", 10_000, 0, 1_000_000),
            warm_ttl_seconds=env_number("SCRIBE_CACHE_WARM_TTL_S", 300, 1, 86_400),
        )
