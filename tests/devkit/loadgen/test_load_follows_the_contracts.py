"""The load `scribe loadgen` sends, against a running worker: the world events and ticks it
meant to be valid are applied (fewer than 1 % dead-lettered), and every malformed message it
sent is dead-lettered.

20 s at 200 messages/s (the 60 s run is measured by hand). AI requests are left out of the mix:
the worker is shared by the whole session, and routing them would keep it busy for the tests
that come after."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest

from devkit.dead_letters import dead_letters_since, tally
from devkit.harness import WorkerProcess
from devkit.loadgen.runner import run_load
from devkit.loadgen.workload import Mix, Workload, WorkloadConfig
from runtime.settings import kafka_bootstrap_servers
from topics.publisher import Publisher

pytestmark = pytest.mark.integration
RATE, SECONDS = 200, 20
WORLD_TOPICS = ("world.events", "world.ticks")


async def test_the_world_flow_accepts_the_load_and_dead_letters_only_the_malformed(
    kafka_url: str, worker: WorkerProcess
) -> None:
    run_id = uuid.uuid4().hex[:8]
    prefix = f"lc-{run_id}-"
    config = WorkloadConfig(
        run_id=run_id, prefix=prefix, worlds=100, mix=Mix(ai_requests=0, malformed=0.01)
    )
    started = datetime.now(UTC)
    async with Publisher(kafka_bootstrap_servers(kafka_url)) as publisher:
        report = await run_load(publisher, Workload(config), RATE, SECONDS)
    assert report.failed == 0 and report.malformed.total() > 0
    assert report.by_topic["world.events"] and report.by_topic["world.ticks"]
    bad_key = f"{prefix}bad-{run_id}".encode()

    letters = [
        letter
        for letter in await dead_letters_since(
            kafka_url,
            started,
            enough=lambda found: sum(d.key == bad_key for d in found) >= report.malformed.total(),
            timeout=120,
        )
        if letter.key is not None and letter.key.startswith(prefix.encode())
    ]
    bad = Counter(d.topic for d in letters if d.key == bad_key)
    assert bad == report.malformed, worker.log_tail()  # every malformed message, on its topic
    meant_valid = [d for d in letters if d.key != bad_key and d.topic in WORLD_TOPICS]
    sent_valid = sum(report.by_topic[topic] for topic in WORLD_TOPICS)
    assert len(meant_valid) < 0.01 * sent_valid, (
        f"{len(meant_valid)} of {sent_valid} valid world events and ticks dead-lettered: "
        f"{tally(meant_valid)}; e.g. {meant_valid[0].reason}"
    )
