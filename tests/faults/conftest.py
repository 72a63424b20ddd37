"""The fault suite runs on servers of its own (a broker, PostgreSQL, Redis from the embedded
stack's `Service` classes), so it can stop and restart them, and so no other worker of the test
session reads its topics or dead-letters its bad input a second time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import redis
import redis.exceptions

from devkit.harness import WorkerProcess, new_worker
from devkit.stack import LocalStack
from devkit.stack.processes import ProcessRecord, free_port, sigterm_as_interrupt
from devkit.stack.services import LOOPBACK, Postgres, Redis, Service


class FaultStack:
    """Servers a test may stop: each restarts on the port and data directory it had."""

    def __init__(self, root: Path) -> None:
        # Whatever the embedded stack runs (simulators included), so the worker has it all.
        self.services: list[Service] = LocalStack(root).services
        by_type = {type(s): s for s in self.services}
        self.postgres = by_type[Postgres]
        self.redis = by_type[Redis]
        self.ports: dict[str, int] = {}
        self.records: dict[str, ProcessRecord] = {}

    def start(self, service: Service) -> None:
        port = self.ports.setdefault(service.name, free_port())
        self.records[service.name] = record = service.start(port)
        service.wait_ready(record, port)

    def stop(self, service: Service) -> None:
        record = self.records[service.name]
        if service is self.redis:
            # SHUTDOWN SAVE writes the keys to disk, so they are there again after the restart
            # and the test can see whether the invalidations delivered late removed them.
            with suppress(redis.exceptions.ConnectionError):
                redis.Redis(host=LOOPBACK, port=self.ports["redis"]).shutdown(save=True)
            deadline = time.monotonic() + 30
            while record.alive():
                assert time.monotonic() < deadline, "redis did not shut down"
                time.sleep(0.1)
        else:
            service.stop(record, self.ports[service.name])

    @contextmanager
    def outage(self, service: Service) -> Iterator[None]:
        """`service` is down inside the block and up again after it."""
        self.stop(service)
        try:
            yield
        finally:
            self.start(service)

    def env(self) -> dict[str, str]:
        env = {s.env_var: s.url(self.ports[s.name]) for s in self.services}
        for service in self.services:
            env.update(service.extra_env)
        return env | {"SCRIBE_FAST_REBALANCE": "1"}

    def stop_all(self) -> None:
        for service in reversed(self.services):
            record = self.records.get(service.name)
            if record is not None and record.alive():
                service.stop(record, self.ports[service.name])

    @classmethod
    @contextmanager
    def running(cls, root: Path) -> Iterator[FaultStack]:
        """Every server started under `root`; all stopped on leaving, also on failure or
        SIGTERM."""
        stack = cls(root)
        stack.postgres.root.mkdir(parents=True, exist_ok=True)
        with sigterm_as_interrupt():
            try:
                for service in stack.services:
                    stack.start(service)
                yield stack
            finally:
                stack.stop_all()


# How the fault worker is tuned, and why:
# - the CDN sink keeps its defaults: it retries a purge until SCRIBE_CDN_RETRY_DEADLINE_S (15
#   minutes) after its first failure, with backoff capped at 30 s, so the one-minute CDN outage
#   costs no dead letter;
# - the router as its integration tests run it: short call timeouts, 2 attempts per model,
#   a breaker that opens after 4 calls and tries again after 2 s, so provider faults play out
#   within seconds.
FAULT_TUNING = {
    "SCRIBE_ROUTER_CALL_TIMEOUT_S": "1",
    "SCRIBE_ROUTER_ATTEMPTS_PER_MODEL": "2",
    "SCRIBE_ROUTER_BACKOFF_BASE_S": "0.02",
    "SCRIBE_ROUTER_BREAKER_MIN_CALLS": "4",
    "SCRIBE_ROUTER_BREAKER_FAILURE_RATE": "0.5",
    "SCRIBE_ROUTER_BREAKER_COOLDOWN_S": "2",
}


@pytest.fixture(scope="session")
def fault_stack(state_dir: Path) -> Iterator[FaultStack]:
    with FaultStack.running(state_dir / "fault-stack") as stack:
        yield stack


@pytest.fixture(scope="session")
def fault_worker(fault_stack: FaultStack, state_dir: Path) -> Iterator[WorkerProcess]:
    # No world ticks in the background: the fault tests count invalidations through metrics,
    # and a ticking world announces its changes on cache.invalidations.
    env = fault_stack.env() | {"SCRIBE_WORLD_TICK_SECONDS": "0"} | FAULT_TUNING
    process = new_worker(env, state_dir / "fault-workers").start()
    try:
        yield process
    finally:
        process.stop()
