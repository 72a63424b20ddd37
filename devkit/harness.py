"""Run `scribe worker` as a child process, and read a topic back: what the demo, the tests and
the benchmarks (and the platform's own tests) use to drive a real pipeline."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from devkit.stack import LocalStack
from devkit.stack.processes import end_child, free_port
from runtime.settings import kafka_bootstrap_servers

SERVICE_VARS = ("SCRIBE_KAFKA_URL", "SCRIBE_DATABASE_URL", "SCRIBE_REDIS_URL")


@contextmanager
def services_for_tests(state_dir: Path) -> Iterator[dict[str, str]]:
    """The services named by SCRIBE_*_URL when all are set; else an embedded stack in
    `state_dir`, stopped afterwards (also when the tests fail). With only SCRIBE_KAFKA_URL set
    (the engine tests on Apache Kafka), the embedded stack brings PostgreSQL and Redis."""
    if all(os.environ.get(name) for name in SERVICE_VARS):
        optional = ("SCRIBE_CDN_URL", "SCRIBE_CDN_PROVIDERS", "SCRIBE_CDN_TOKEN")
        yield (
            {name: os.environ[name] for name in SERVICE_VARS}
            | {name: os.environ[name] for name in optional if os.environ.get(name)}
            | {"SCRIBE_FAST_REBALANCE": os.environ.get("SCRIBE_FAST_REBALANCE", "")}
        )
        return
    kafka_url = os.environ.get("SCRIBE_KAFKA_URL")
    if kafka_url:
        with LocalStack(state_dir, broker=None).running() as env:
            yield env | {"SCRIBE_KAFKA_URL": kafka_url}
        return
    with LocalStack(state_dir).running() as env:
        yield env


@contextmanager
def gateway_process(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """`scribe gateway` as a child process on a free loopback port, once `/health` answers;
    its URL. Stopped (SIGINT, then SIGKILL after 20 s) on leaving, also on failure. `env` holds
    the service URLs and the gateway's tokens."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "scribe", "gateway"],
            env={**os.environ, **env, "SCRIBE_GATEWAY_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not _answers_health(url):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield url
    finally:
        end_child(process, signal.SIGINT, 20)


def _answers_health(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class WorkerProcess:
    """`scribe worker` as a child process, the way production runs it. `command` (the
    arguments after `python`) may name another Faust app's worker, e.g. a test's probe."""

    env: dict[str, str]
    state_dir: Path
    app_id: str
    web_port: int
    process: subprocess.Popen[bytes] | None = None
    command: tuple[str, ...] = ("-m", "scribe", "worker")
    # Where this start's lines begin in the log: a restarted worker appends to the same file.
    log_offset: int = 0

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"worker-{self.app_id}-{self.web_port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, ready_timeout: float = 120.0) -> WorkerProcess:
        env = {
            **os.environ,
            **self.env,
            "SCRIBE_APP_ID": self.app_id,
            "SCRIBE_WEB_PORT": str(self.web_port),
            "SCRIBE_STATE_DIR": str(self.state_dir),
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *self.command],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Ready once the worker logs `Ready` (its flows started: /ready says when they are
        consuming) and /health answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited ({self.process.returncode}):\n{self.log_tail()}")
            with open(self.log_path, "rb") as log:
                log.seek(self.log_offset)
                started = log.read().decode(errors="replace")
            if "]: Ready" in started:
                try:
                    if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.25)
        raise TimeoutError(f"worker not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def wait_consuming(self, timeout: float = 90.0) -> None:
        """Until /ready answers 200: every flow of the worker has joined its consumer group, so
        what is published from now on is read at once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """The CPU (user and system) the running worker has used so far."""
        import psutil  # a developer dependency, only for what the benchmarks measure

        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is not None:
            end_child(self.process, signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit — a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the worker's /metrics samples called `name` that carry `labels`."""
        return metric_sum(self.samples(), name, **labels)

    def samples(self) -> list[Sample]:
        """Every sample of the worker's /metrics, read at once (one request for many sums)."""
        body = httpx.get(f"{self.url}/metrics", timeout=5).text
        return [
            sample for family in text_string_to_metric_families(body) for sample in family.samples
        ]


def metric_sum(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called `name` that carry `labels`."""
    return sum(
        sample.value
        for sample in samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@asynccontextmanager
async def group_offsets(kafka_url: str, group: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer of `group` that never joins it: for reading (or setting) the
    group's committed offsets without taking partitions from its workers."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap_servers(kafka_url),
        group_id=group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


def new_worker(env: dict[str, str], state_dir: Path, app_id: str | None = None) -> WorkerProcess:
    return WorkerProcess(
        env=env,
        state_dir=state_dir,
        app_id=app_id or f"scribe-test-{uuid.uuid4().hex[:8]}",
        web_port=free_port(),
    )


@dataclass(frozen=True)
class GroupAssignment:
    state: str  # Kafka's view of the group: Stable, PreparingRebalance, ...
    partitions: list[int]  # per member, how many partitions of the topic it holds


async def group_assignment(kafka_url: str, group_id: str, topic: str) -> GroupAssignment:
    """How a plain consumer group (e.g. the usage batch consumers) spreads `topic`, as the
    group coordinator answers it: one count per member."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers(kafka_url))
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group_id])
    finally:
        await admin.close()
    (group,) = response.to_object()["groups"]
    counts = []
    for member in group["members"]:
        if not member["member_assignment"]:  # mid-rebalance: nothing assigned yet
            counts.append(0)
            continue
        assignment = ConsumerProtocolMemberAssignment.decode(member["member_assignment"])
        counts.append(sum(len(parts) for name, parts in assignment.assignment if name == topic))
    return GroupAssignment(group["state"], counts)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


async def read_until(
    kafka_url: str,
    topic: str,
    done: Callable[[list[Record]], bool],
    match: Callable[[Record], bool] = lambda _: True,
    timeout: float = 60.0,
) -> list[Record]:
    """Read `topic` from the beginning, keeping records that `match`, until `done(kept)` or the
    timeout. Does not rely on end offsets (the embedded broker reports them wrongly)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap_servers(kafka_url),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    kept: list[Record] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done(kept):
            batches: dict[Any, list[Any]] = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for m in messages:
                    record = Record(
                        m.topic, m.partition, m.offset, m.key, m.value, dict(m.headers or ())
                    )
                    if match(record):
                        kept.append(record)
    finally:
        await consumer.stop()
    return kept


class ArrivalWatch:
    """Reads a topic from the beginning in the background and notes when each key of interest
    (found by `key_of(value)`) first arrived, for latency measurements. Ready once it has read
    what was already there (an empty poll), since end offsets are not trusted."""

    def __init__(self, kafka_url: str, topic: str, key_of: Callable[[bytes], str | None]) -> None:
        self.kafka_url = kafka_url
        self.topic = topic
        self.key_of = key_of
        self.seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()

    async def __aenter__(self) -> ArrivalWatch:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self._caught_up.wait(), 120)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _read(self) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=kafka_bootstrap_servers(self.kafka_url),
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
        )
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=10)
                now = time.monotonic()
                if not batches:
                    self._caught_up.set()
                for records in batches.values():
                    for record in records:
                        key = self.key_of(record.value) if record.value is not None else None
                        if key is not None:
                            self.seen.setdefault(key, now)
        finally:
            await consumer.stop()

    async def arrival(self, key: str, timeout: float = 60) -> float:
        """The monotonic time `key` arrived, waiting for it up to `timeout`."""
        deadline = time.monotonic() + timeout
        while key not in self.seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{key} did not arrive on {self.topic} within {timeout:.0f} s")
            await asyncio.sleep(0.001)
        return self.seen[key]
