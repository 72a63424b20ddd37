"""Which database serves a read that may lag: the decision, how often it is remade, and what
counts as an unreachable replica. The real replica is in tests/integration/test_read_replica.py."""

from __future__ import annotations

import socket
import time

import pytest

from runtime.settings import Settings, SettingsError
from sinks.postgres.databases import Databases, ReplicaVerdict, fallback_reason


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("lag_s", "reason"),
    [
        (None, "unreachable"),
        (0.0, None),
        (4.99, None),
        (5.0, None),  # at the limit is still within it
        (5.01, "lagging"),
        (3600.0, "lagging"),
    ],
)
def test_fallback_reason(lag_s: float | None, reason: str | None) -> None:
    assert fallback_reason(lag_s, max_lag_s=5.0) == reason


def test_an_unmeasured_replica_serves_nothing_and_is_due() -> None:
    verdict = ReplicaVerdict(max_lag_s=5.0, check_s=1.0, clock=Clock())
    assert verdict.due
    assert verdict.reason == "unreachable"


def test_the_verdict_is_remade_at_most_every_check_interval() -> None:
    clock = Clock()
    verdict = ReplicaVerdict(max_lag_s=5.0, check_s=2.0, clock=clock)
    assert verdict.record(0.3) is None
    clock.now += 1.9
    assert not verdict.due  # still the last verdict: no query per read
    clock.now += 0.1
    assert verdict.due
    assert verdict.record(9.0) == "lagging"
    assert verdict.lag_s == 9.0
    assert not verdict.due
    clock.now += 2.0
    assert verdict.record(None) == "unreachable"
    clock.now += 2.0
    assert verdict.record(1.0) is None  # back on the replica once it caught up


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_replica_that_refuses_connections_measures_as_unreachable() -> None:
    port = _closed_port()
    databases = Databases(
        "postgresql://postgres@127.0.0.1:1/postgres",
        f"postgresql://postgres@127.0.0.1:{port}/postgres",
    )
    started = time.monotonic()
    assert await databases._measure_lag() is None
    assert time.monotonic() - started < 2.5  # bounded by the probe timeout
    await databases.close(deadline=1.0)


def test_the_settings_name_the_replica_and_its_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCRIBE_DATABASE_READ_URL", raising=False)
    assert Settings.from_env().database_read_url is None
    monkeypatch.setenv("SCRIBE_DATABASE_READ_URL", "postgresql://reader:pw@replica:5432/scribe")
    monkeypatch.setenv("SCRIBE_DATABASE_READ_MAX_LAG_S", "2.5")
    monkeypatch.setenv("SCRIBE_DATABASE_READ_CHECK_S", "0.5")
    settings = Settings.from_env()
    assert settings.database_read_url == "postgresql://reader:pw@replica:5432/scribe"
    assert (settings.database_read_max_lag_s, settings.database_read_check_s) == (2.5, 0.5)
    resolved = Settings(
        kafka_url="kafka://k:9092",
        database_url="postgresql://p/db",
        redis_url="redis://r/0",
        database_read_url=settings.database_read_url,
    ).require()
    assert "pw" in resolved.secrets  # the replica's password never reaches a log either
    monkeypatch.setenv("SCRIBE_DATABASE_READ_URL", "mysql://replica/scribe")
    with pytest.raises(SettingsError, match="SCRIBE_DATABASE_READ_URL"):
        Settings.from_env()
    monkeypatch.setenv("SCRIBE_DATABASE_READ_URL", "postgresql://replica/scribe")
    monkeypatch.setenv("SCRIBE_DATABASE_READ_CHECK_S", "0")
    with pytest.raises(SettingsError, match="SCRIBE_DATABASE_READ_CHECK_S"):
        Settings.from_env()
