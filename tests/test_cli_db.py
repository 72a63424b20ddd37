"""`scribe db migrate` when PostgreSQL cannot be reached: one clear line, exit 1, no secret."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens on it once the probe is closed


def test_migrate_with_postgres_down_says_where_and_why_without_a_traceback() -> None:
    port = _closed_port()
    env = {
        **os.environ,
        "SCRIBE_DATABASE_URL": f"postgresql://scribe:pw-not-shown@127.0.0.1:{port}/scribe",
        "SCRIBE_KAFKA_URL": f"kafka://127.0.0.1:{port}",
        "SCRIBE_REDIS_URL": f"redis://127.0.0.1:{port}",
    }
    run = subprocess.run(
        [sys.executable, "-m", "scribe", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert f"PostgreSQL at postgresql://scribe:***@127.0.0.1:{port}/scribe" in run.stderr
    assert "ConnectionRefusedError" in run.stderr
    assert "Traceback" not in run.stderr
    assert "pw-not-shown" not in run.stderr + run.stdout
