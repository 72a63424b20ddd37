"""Fixtures the cache tests share: the session's Redis and a key prefix of their own per test."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def redis_url(services: dict[str, str]) -> str:
    return services["SCRIBE_REDIS_URL"]


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"
