"""The sending loop: paced, every message acknowledged and accounted for; progress and report."""

from __future__ import annotations

import io
import uuid

import pytest

from devkit.harness import read_until
from devkit.loadgen.runner import LoadReport, Progress, run_load
from devkit.loadgen.workload import Malformed, Message, Mix, Workload, WorkloadConfig
from runtime.settings import kafka_bootstrap_servers
from schemas import encode
from topics.catalog import INPUT_TOPICS, topic_for
from topics.publisher import Publisher


def test_the_report_gives_the_rate_against_the_target_and_counts_per_topic() -> None:
    report = LoadReport(target_rate=100, seconds=2, sent=200, acknowledged=200, elapsed=2.5)
    report.by_topic.update({"usage.events": 150, "world.ticks": 48})
    report.malformed.update({"world.ticks": 2})
    report.acked_per_second = [90, 110, 0]
    text = "\n".join(report.lines())
    assert report.ratio == pytest.approx(0.8)
    assert "achieved  80 events/s: 200 acknowledged in 2.50 s (80.0% of target)" in text
    # The last, partial second is left out.
    assert "min 90  median 100  max 110; 2 of 2 within 10 % of target" in text
    assert report.seconds_within(0.05) == 0
    assert "world.ticks                   48          2" in text
    assert "FAILED" not in text


def test_progress_prints_a_line_per_interval_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(stream, every_s=1.0)
    report = LoadReport(target_rate=10, seconds=4)
    for elapsed, acked in ((0.0, 0), (0.5, 5), (1.0, 10), (2.0, 20)):
        report.sent = report.acknowledged = acked
        progress.update(elapsed, 4, report)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[-1].startswith("[############------------]  50%   2.0/4 s  sent 20  acked 20")
    assert lines[-1].endswith("10 events/s")


@pytest.mark.integration
async def test_every_message_sent_is_acknowledged_and_stored(kafka_url: str) -> None:
    run_id = uuid.uuid4().hex[:8]
    prefix = f"rl-{run_id}-"
    config = WorkloadConfig(
        run_id=run_id, prefix=prefix, users=50, worlds=5, mix=Mix(malformed=0.05)
    )
    seen: list[Message] = []
    async with Publisher(kafka_bootstrap_servers(kafka_url)) as publisher:
        report = await run_load(publisher, Workload(config), 400, 1.5, on_sent=seen.append)
    assert report.sent == len(seen) == 600
    assert report.acknowledged == 600 and report.failed == 0
    assert report.by_topic.total() + report.malformed.total() == 600
    assert report.elapsed >= 1.4, "the load is spread over the duration, not sent at once"
    for spec in INPUT_TOPICS:
        expected = report.by_topic[spec.name] + report.malformed[spec.name]
        sent = {_sent_value(m) for m in seen if _sent_topic(m) == spec.name}
        stored = await _stored(kafka_url, spec.name, sent)
        # Every message is there; a few twice is at-least-once: the embedded broker grants no
        # idempotent producer, so a batch retried after a slow acknowledgement is stored again.
        assert set(stored) == sent, spec.name
        assert len(stored) >= expected, spec.name


async def _stored(kafka_url: str, name: str, sent: set[bytes]) -> list[bytes]:
    """Records in topic `name` that are byte for byte what this run sent. The pipeline writes
    to some input topics itself (the router's usage events for the same users): not ours."""
    stored = await read_until(
        kafka_url,
        name,
        done=lambda kept: {r.value for r in kept} >= sent,
        match=lambda record: record.value in sent,
        timeout=30,
    )
    return [r.value for r in stored if r.value is not None]


def _sent_value(message: Message) -> bytes:
    return message.value if isinstance(message, Malformed) else encode(message)


def _sent_topic(message: Message) -> str:
    return message.topic if isinstance(message, Malformed) else topic_for(message).name
