"""One embedded stack of its own, one worker and one gateway on it, and `scribe loadgen`'s mixed
load sent once through Kafka: what the metric coverage tests scrape. Its own stack, so the
broker's consumer groups are this worker's alone."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devkit.harness import WorkerProcess, gateway_process, new_worker
from devkit.stack import LocalStack
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
        # Every flow's group joined before the load: the lag test expects to find them all.
        worker.wait_consuming()
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


@pytest.fixture(scope="package")
def gateway(
    metrics_stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`scribe gateway` on a free port, having accepted one usage event; its URL."""
    env = {**metrics_stack, "SCRIBE_GATEWAY_TOKENS": f"metrics:{GATEWAY_TOKEN}:usage.events"}
    log_path: Path = tmp_path_factory.mktemp("metrics-gateway") / "gateway.log"
    with gateway_process(env, log_path) as url:
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
