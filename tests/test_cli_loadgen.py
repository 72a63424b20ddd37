"""`scribe loadgen`: runs for its duration and ends with the summary."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.integration
def test_loadgen_prints_progress_and_a_summary(services: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scribe", "loadgen", "--rate", "300", "--seconds", "1.5"],
        env={**os.environ, **services},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "sent 450  acked 450" in result.stderr  # the final progress line
    assert "target    300 events/s for 1.5 s (450 events)" in result.stdout
    assert "450 acknowledged" in result.stdout
    assert "usage.events" in result.stdout


def test_loadgen_refuses_a_rate_of_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scribe", "loadgen", "--rate", "0"],
        env={**os.environ, "SCRIBE_KAFKA_URL": "127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--rate and --seconds must be positive" in result.stderr
