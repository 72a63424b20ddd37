"""The router's integration tests share one embedded stack of their own (Kafka protocol,
PostgreSQL, Redis, the provider simulator) and one router worker: any other worker consuming
ai.requests in another group would route the same requests again and spoil call counts."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.harness import WorkerProcess, read_until
from devkit.stack import LocalStack
from runtime.settings import kafka_bootstrap_servers
from schemas import decode
from schemas.events import AIRequest, AIResponse, Event, UsageEvent
from schemas.examples import example
from topics.publisher import Publisher

APP_ID = "scribe-router-it"
OPENROUTER_KEYS = ("it-openrouter-1", "it-openrouter-2", "it-openrouter-3")
GEMINI_KEYS = ("it-gemini-1", "it-gemini-2", "it-gemini-3")
BREAKER_COOLDOWN_S = 2.0
LANES = ("held", "urgent", "normal", "deferred")


def offpeak_excluding(now: datetime) -> str:
    """A one-hour UTC window starting three hours from now: the deferred lane holds."""
    start = now + timedelta(hours=3)
    end = start + timedelta(hours=1)
    return f"{start:%H:%M}-{end:%H:%M}"


@pytest.fixture(scope="package")
def router_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with LocalStack(tmp_path_factory.mktemp("router-stack")).running() as env:
        yield env


@pytest.fixture(scope="package")
def router_env(router_stack: dict[str, str]) -> dict[str, str]:
    simulator = router_stack["SCRIBE_PROVIDER_URL"]
    return {
        **router_stack,
        "OPENROUTER_API_KEYS": ",".join(OPENROUTER_KEYS),
        "GEMINI_API_KEYS": ",".join(GEMINI_KEYS),
        "SCRIBE_OPENROUTER_URL": simulator,
        "SCRIBE_GEMINI_URL": simulator,
        "SCRIBE_ROUTER_BREAKER_MIN_CALLS": "4",
        "SCRIBE_ROUTER_BREAKER_FAILURE_RATE": "0.5",
        "SCRIBE_ROUTER_BREAKER_COOLDOWN_S": str(BREAKER_COOLDOWN_S),
        "SCRIBE_ROUTER_ATTEMPTS_PER_MODEL": "2",
        "SCRIBE_ROUTER_BACKOFF_BASE_S": "0.02",
        "SCRIBE_ROUTER_CALL_TIMEOUT_S": "2",
        "SCRIBE_ROUTER_OFFPEAK": offpeak_excluding(datetime.now(UTC)),
        "SCRIBE_ROUTER_PROMOTE_BEFORE_S": "30",
    }


def router_worker_process(env: dict[str, str], state_dir: Path) -> WorkerProcess:
    from devkit.stack.processes import free_port

    return WorkerProcess(env=env, state_dir=state_dir, app_id=APP_ID, web_port=free_port())


def wait_for_lanes(worker: WorkerProcess, timeout: float = 60) -> None:
    """/ready answers 200 only once every lane's consumer (and decide's and settle's) has joined its
    group and got partitions: each has logged its assignment by then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(f"{worker.url}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            ready = False  # the web server is not up yet
        if ready:
            log = worker.log_path.read_text(errors="replace")
            flows = ["router-decide", "router-settle", *(f"router-{lane}" for lane in LANES)]
            missing = [f for f in flows if f"{f}: assigned partitions" not in log]
            assert not missing, f"/ready answered before {missing} joined:\n{worker.log_tail()}"
            return
        time.sleep(0.2)
    raise TimeoutError(f"router not ready:\n{worker.log_tail()}")


@pytest.fixture(scope="package")
def router_worker(
    router_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    worker = router_worker_process(router_env, tmp_path_factory.mktemp("router-workers"))
    try:
        worker.start()
        wait_for_lanes(worker)
        yield worker
    finally:
        worker.stop()


class Simulator:
    """The stack's provider simulator, driven over its control API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rules(self, *rules: dict[str, Any]) -> None:
        httpx.post(f"{self.url}/_sim/rules", json={"rules": list(rules)}).raise_for_status()

    def calls(self, tag: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        calls = httpx.get(f"{self.url}/_sim/calls", params={"since": since}, timeout=30).json()
        return [c for c in calls if tag is None or c["prompt_tag"] == tag]


@pytest.fixture
def simulator(router_stack: dict[str, str]) -> Iterator[Simulator]:
    sim = Simulator(router_stack["SCRIBE_PROVIDER_URL"])
    sim.rules()
    try:
        yield sim
    finally:
        sim.rules()


class Router:
    """Publish AI requests and read what the router answered."""

    def __init__(self, kafka_url: str, publisher: Publisher, worker: WorkerProcess) -> None:
        self.kafka_url = kafka_url
        self.publisher = publisher
        self.worker = worker

    @staticmethod
    def tag() -> str:
        return uuid.uuid4().hex[:12]

    @staticmethod
    def request(tag: str, **fields: Any) -> AIRequest:
        fields.setdefault("prompt", f"Paint the harbour at dusk [tag:{tag}]")
        fields.setdefault("user_id", f"user-{tag}")
        return example(AIRequest, **fields)

    async def publish(self, *events: Event) -> None:
        await self.publisher.publish_many(events)

    async def responses(
        self, request_ids: set[str], count: int | None = None, timeout: float = 60
    ) -> list[AIResponse]:
        wanted = len(request_ids) if count is None else count
        records = await read_until(
            self.kafka_url,
            "ai.responses",
            done=lambda kept: len(kept) >= wanted,
            match=lambda r: r.value is not None and request_id_of(r.value) in request_ids,
            timeout=timeout,
        )
        return [decode(r.value or b"", AIResponse) for r in records]

    async def usage(self, user_id: str, count: int, timeout: float = 60) -> list[UsageEvent]:
        records = await read_until(
            self.kafka_url,
            "usage.events",
            done=lambda kept: len(kept) >= count,
            match=lambda r: r.key == user_id.encode(),
            timeout=timeout,
        )
        return [decode(r.value or b"", UsageEvent) for r in records]

    def metric(self, name: str, **labels: str) -> float | None:
        text = httpx.get(f"{self.worker.url}/metrics", timeout=10).text
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return None


REQUEST_ID = re.compile(rb'"request_id":"([^"]+)"')


def request_id_of(value: bytes) -> str | None:
    match = REQUEST_ID.search(value)
    return match.group(1).decode() if match else None


@pytest.fixture
async def router(
    router_stack: dict[str, str], router_worker: WorkerProcess
) -> AsyncIterator[Router]:
    kafka_url = router_stack["SCRIBE_KAFKA_URL"]
    async with Publisher(kafka_bootstrap_servers(kafka_url)) as publisher:
        yield Router(kafka_url, publisher, router_worker)
