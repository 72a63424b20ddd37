"""Settings a worker can be built from in-process (no server is reached while building)."""

from __future__ import annotations

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("SCRIBE_PROCESSING_GUARANTEE", raising=False)
    monkeypatch.setenv("SCRIBE_KAFKA_URL", "kafka://127.0.0.1:9092")
    monkeypatch.setenv("SCRIBE_DATABASE_URL", "postgresql://u@127.0.0.1:5432/db")
    monkeypatch.setenv("SCRIBE_REDIS_URL", "redis://127.0.0.1:6379/0")
    return monkeypatch
