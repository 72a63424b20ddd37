"""SCRIBE_PROCESSING_GUARANTEE reaches Faust; a value Faust does not know is refused early."""

from __future__ import annotations

import pytest
from faust.types import TP

from runtime.metrics import ASSIGNED_PARTITIONS
from runtime.settings import Settings, SettingsError
from scribe.app import count_assignment, faust_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("SCRIBE_PROCESSING_GUARANTEE", raising=False)
    monkeypatch.setenv("SCRIBE_KAFKA_URL", "kafka://127.0.0.1:9092")
    monkeypatch.setenv("SCRIBE_DATABASE_URL", "postgresql://u@127.0.0.1:5432/db")
    monkeypatch.setenv("SCRIBE_REDIS_URL", "redis://127.0.0.1:6379/0")
    return monkeypatch


def test_at_least_once_by_default(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env().require()
    assert faust_settings(settings)["processing_guarantee"] == "at_least_once"


def test_exactly_once_on_request(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SCRIBE_PROCESSING_GUARANTEE", "exactly_once")
    settings = Settings.from_env().require()
    assert faust_settings(settings)["processing_guarantee"] == "exactly_once"


def test_an_unknown_guarantee_names_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SCRIBE_PROCESSING_GUARANTEE", "exactly-once")
    with pytest.raises(SettingsError, match="SCRIBE_PROCESSING_GUARANTEE: 'exactly-once'"):
        Settings.from_env()


def test_assigned_partitions_are_counted_per_pipeline_topic() -> None:
    count_assignment(
        {
            TP("usage.events", 0),
            TP("usage.events", 3),
            TP("ai.requests", 1),
            TP("scribe-usage-changelog", 0),
        }
    )
    assert ASSIGNED_PARTITIONS.labels(topic="usage.events")._value.get() == 2
    assert ASSIGNED_PARTITIONS.labels(topic="ai.requests")._value.get() == 1
    assert ASSIGNED_PARTITIONS.labels(topic="world.events")._value.get() == 0
