"""One embedded stack of its own, one worker and one gateway on it, and `scribe loadgen`'s mixed
load sent once through Kafka: what the metric coverage tests scrape. Its own stack, so the
broker's consumer groups are this worker's alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devkit.harness import WorkerProcess, new_worker
from devkit.stack import LocalStack
from devkit.stack.processes import free_port
from schemas import encode
from schemas.events import UsageEvent
from schemas.examples import example

LOAD_RATE = 150
LOAD_SECONDS = 10
GATEWAY_TOKEN = f"metrics-{uuid.uuid4().hex}"


@pytest.fixture(scope="package")
def metrics_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with LocalStack(tmp_path_factory.mktemp("metrics-stack")).running() as env:
        yield env


@pytest.fixture(scope="package")
def loaded_worker(
    metrics_stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker that has read `scribe loadgen`'s load (malformed messages included)."""
    state_dir = tmp_path_factory.mktemp("metrics-worker")
    worker = new_worker(metrics_stack, state_dir).start()
    try:
        load = subprocess.run(
            [
                sys.executable,
                "-m",
                "scribe",
                "loadgen",
                f"--rate={LOAD_RATE}",
                f"--seconds={LOAD_SECONDS}",
                "--users=200",
                "--worlds=20",
                "--malformed=0.02",
            ],
            env={**os.environ, **metrics_stack},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert load.returncode == 0, load.stdout + load.stderr
        yield worker
    finally:
        worker.stop()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="package")
def gateway(
    metrics_stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`scribe gateway` on a free port, having accepted one usage event; its URL."""
    port = free_port()
    env = {
        **os.environ,
        **metrics_stack,
        "SCRIBE_GATEWAY_PORT": str(port),
        "SCRIBE_GATEWAY_TOKENS": f"metrics:{GATEWAY_TOKEN}:usage.events",
    }
    log_path: Path = tmp_path_factory.mktemp("metrics-gateway") / "gateway.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "scribe", "gateway"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not _healthy(url):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        response = httpx.post(
            f"{url}/v1/events/usage.events",
            content=encode(example(UsageEvent)),
            headers={
                "Authorization": f"Bearer {GATEWAY_TOKEN}",
                "Content-Type": "application/json",
            },
            timeout=30,
        )
        assert response.status_code == 202, response.text
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
