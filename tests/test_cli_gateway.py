"""`scribe gateway`: serves on its port; refuses to start without client tokens."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devkit.harness import gateway_process
from schemas import encode
from schemas.events import UsageEvent
from schemas.examples import example

TOKEN = f"cli-{uuid.uuid4().hex}"


def test_scribe_gateway_refuses_to_start_without_tokens() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIBE_GATEWAY_")}
    env |= {
        "SCRIBE_KAFKA_URL": "127.0.0.1:1",
        "SCRIBE_DATABASE_URL": "postgresql://u@127.0.0.1:1/x",
        "SCRIBE_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "scribe", "gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "no client tokens: set SCRIBE_GATEWAY_TOKENS" in result.stderr


@pytest.fixture
def gateway_url(services: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`scribe gateway` as a child process on a free loopback port; stopped afterwards."""
    log_path = tmp_path / "gateway.log"
    env = {**services, "SCRIBE_GATEWAY_TOKENS": f"cli:{TOKEN}:usage.events"}
    with gateway_process(env, log_path) as url:
        yield url, log_path


@pytest.mark.integration
def test_scribe_gateway_serves_on_its_port(gateway_url: tuple[str, Path]) -> None:
    url, log_path = gateway_url
    response = httpx.post(
        f"{url}/v1/events/usage.events",
        content=encode(example(UsageEvent)),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 202, log_path.read_text()
    logged = "POST /v1/events/usage.events 202 client=cli"
    deadline = time.monotonic() + 10  # the access log is written after the answer is sent
    while logged not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = log_path.read_text()
    assert logged in log
    assert TOKEN not in log
