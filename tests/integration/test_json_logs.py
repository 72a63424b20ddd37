"""SCRIBE_LOG_FORMAT=json: a worker under load, then stopped by SIGTERM, writes nothing but JSON
lines, Faust's own lines included, from its first line to its last; so does the gateway. Both
say which event loop they run on: uvloop unless SCRIBE_EVENT_LOOP=asyncio."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agents.usage.synthetic import synthetic_usage
from devkit.harness import WorkerProcess, gateway_process, new_worker
from devkit.stack import LocalStack
from runtime.settings import kafka_bootstrap_servers
from schemas import encode
from schemas.events import UsageEvent
from schemas.examples import example
from topics.catalog import USAGE_EVENTS

pytestmark = pytest.mark.integration

LOAD_SECONDS = 3.0
REQUIRED = {"time", "level", "logger", "message"}


def parsed(path: Path) -> list[dict[str, Any]]:
    """Every line of the log as a JSON object; fails on the first line that is not one."""
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise AssertionError(f"{path.name}:{number} is not JSON: {line!r}") from None
        assert isinstance(entry, dict), f"{path.name}:{number}: {line!r}"
        assert entry.keys() >= REQUIRED, f"{path.name}:{number} lacks {REQUIRED - entry.keys()}"
        entries.append(entry)
    return entries


async def publish_load(kafka_url: str, run: str) -> str:
    """Usage events for LOAD_SECONDS, and one that is not JSON (a dead letter) among them;
    where that one is, as the worker's warning names it."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers(kafka_url), acks="all")
    await producer.start()
    try:
        events = synthetic_usage(run, 10**6, users=20, seed=7)
        ends = time.monotonic() + LOAD_SECONDS
        sent = 0
        bad_at = ""
        while time.monotonic() < ends:
            for item in (next(events) for _ in range(50)):
                await producer.send(USAGE_EVENTS.name, item.value, key=item.key)
            sent += 50
            if sent == 100:
                bad = await producer.send_and_wait(USAGE_EVENTS.name, b'{"marker": ', key=b"x")
                bad_at = f"{bad.topic} partition {bad.partition} offset {bad.offset} "
            await asyncio.sleep(0.2)
        await producer.flush()
    finally:
        await producer.stop()
    return bad_at


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A stack of its own, so the worker's new consumer groups start on this test's load alone,
    not on the backlog the session's earlier tests left on the shared broker."""
    with LocalStack(tmp_path_factory.mktemp("json-logs-stack")).running() as env:
        yield env


def dead_letter_logged(worker: WorkerProcess, where: str) -> bool:
    text = worker.log_path.read_text(encoding="utf-8", errors="replace")
    return f"{where}dead-lettered" in text


async def test_a_worker_logs_only_json_lines_from_start_to_stop(
    own_stack: dict[str, str], state_dir: Path
) -> None:
    run = f"jsonlog-{uuid.uuid4().hex[:8]}"
    worker = new_worker(
        own_stack | {"SCRIBE_LOG_FORMAT": "json"},
        state_dir / "workers-json-logs",
    ).start()
    try:
        where = await publish_load(own_stack["SCRIBE_KAFKA_URL"], run)
        deadline = time.monotonic() + 60
        while not dead_letter_logged(worker, where):
            assert time.monotonic() < deadline, f"no dead-letter warning:\n{worker.log_tail()}"
            await asyncio.sleep(0.25)
    finally:
        worker.stop()
    assert worker.process is not None and worker.process.returncode == 0, worker.log_tail()

    entries = parsed(worker.log_path)
    loggers = {e["logger"] for e in entries}
    assert any(name.startswith(("faust.", "mode.")) for name in loggers), loggers
    assert any(e["message"].endswith("]: Ready") for e in entries), "the worker is ready"
    assert any(e["message"] == "worker: running on the uvloop event loop" for e in entries)
    assert any("Starting..." in e["message"] for e in entries), "Faust's services starting"
    dead_letters = [e for e in entries if f"{where}dead-lettered (json)" in e["message"]]
    assert dead_letters, "the dead letter's warning"
    for entry in dead_letters:  # more than one only if the worker read the record twice
        assert (entry["level"], entry["logger"], entry["flow"]) == (
            "WARNING",
            "agents.intake",
            "usage",
        )
    assert any(e.get("flow") == "usage" and "assigned partitions" in e["message"] for e in entries)
    assert any(e["message"].startswith("worker: stopped in") for e in entries), "the stop"
    for entry in entries:
        assert entry["time"].endswith("Z"), entry
        assert "trace_id" not in entry, "tracing is off (no OTEL_*): the field is left out"


@pytest.mark.parametrize(("setting", "loop"), [(None, "uvloop"), ("asyncio", "asyncio")])
def test_the_gateway_logs_only_json_lines(
    services: dict[str, str], tmp_path: Path, setting: str | None, loop: str
) -> None:
    token = f"json-{uuid.uuid4().hex}"
    log_path = tmp_path / "gateway.log"
    env = services | {
        "SCRIBE_LOG_FORMAT": "json",
        "SCRIBE_GATEWAY_TOKENS": f"jsonlog:{token}:usage.events",
    }
    if setting is not None:
        env["SCRIBE_EVENT_LOOP"] = setting
    with gateway_process(env, log_path) as url:
        events = f"{url}/v1/events/usage.events"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        valid = httpx.post(events, content=encode(example(UsageEvent)), headers=headers, timeout=30)
        invalid = httpx.post(events, content=b'{"schema_version": 1}', headers=headers, timeout=30)
        assert (valid.status_code, invalid.status_code) == (202, 400), log_path.read_text()
        deadline = time.monotonic() + 10  # the access log is written after the answer is sent
        while " 400 client=jsonlog" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)

    entries = parsed(log_path)
    messages = [e["message"] for e in entries if e["logger"] == "scribe.gateway"]
    assert any(m.startswith("gateway on http://127.0.0.1:") for m in messages), messages
    assert f"gateway: running on the {loop} event loop" in messages, messages
    assert any(m.startswith("POST /v1/events/usage.events 202 client=jsonlog") for m in messages)
    assert token not in log_path.read_text()
