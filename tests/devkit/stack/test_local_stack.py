"""`scribe stack up` twice reuses what runs; `down` leaves no process of ours running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from devkit.stack import fill_environment

pytestmark = pytest.mark.integration


def _scribe(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIBE_")}
    env["SCRIBE_STATE_DIR"] = str(state_dir)
    return subprocess.run(
        [sys.executable, "-m", "scribe", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _processes_under(state_dir: Path) -> list[psutil.Process]:
    """Our servers: each names the state dir (data dir) or one of the stack's ports."""
    ours = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if str(state_dir) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            ours.append(proc)
    return ours


def test_up_twice_then_down_leaves_nothing_running(state_dir: Path) -> None:
    state_dir = state_dir / "cli-stack"
    first = _scribe(state_dir, "stack", "up")
    try:
        assert first.returncode == 0, first.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in first.stdout.splitlines()
        )
        assert exports["SCRIBE_KAFKA_URL"].startswith("kafka://127.0.0.1:")
        assert exports["SCRIBE_DATABASE_URL"].startswith("postgresql://postgres@127.0.0.1:")
        assert exports["SCRIBE_REDIS_URL"].startswith("redis://127.0.0.1:")
        assert exports["SCRIBE_CDN_URL"].startswith("http://127.0.0.1:")

        second = _scribe(state_dir, "stack", "up")
        assert second.returncode == 0, second.stderr
        assert second.stdout == first.stdout
        assert second.stderr.count("already running") == 5

        status = _scribe(state_dir, "stack", "status")
        assert status.returncode == 0
        assert status.stdout.count("running") == 5
        pids = [int(line.split()[3]) for line in status.stdout.splitlines()]
        assert all(psutil.pid_exists(pid) for pid in pids)

        # What `scribe worker` finds in its environment: every unset variable from the stack.
        empty: dict[str, str] = {}
        assert fill_environment(empty, state_dir) == sorted(exports)
        assert empty == exports
        # What is set wins; the embedded broker's tuning comes only with its own URL.
        elsewhere = {"SCRIBE_KAFKA_URL": "kafka://kafka.example:9092", "SCRIBE_CDN_URL": ""}
        fill_environment(elsewhere, state_dir)
        assert elsewhere["SCRIBE_KAFKA_URL"] == "kafka://kafka.example:9092"
        assert elsewhere["SCRIBE_CDN_URL"] == exports["SCRIBE_CDN_URL"]
        assert elsewhere["SCRIBE_PROVIDER_URL"] == exports["SCRIBE_PROVIDER_URL"]
        assert "SCRIBE_FAST_REBALANCE" not in elsewhere
        assert "SCRIBE_PRODUCER_LINGER_MS" not in elsewhere
    finally:
        down = _scribe(state_dir, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert not any(psutil.pid_exists(pid) and _running(pid) for pid in pids)
    assert _processes_under(state_dir) == []
    assert _scribe(state_dir, "stack", "status").returncode == 1
    assert fill_environment({}, state_dir) == []


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
