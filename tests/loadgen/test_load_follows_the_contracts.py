"""`scribe loadgen` against a running worker: the world events and ticks it meant to be valid
are applied (fewer than 1 % dead-lettered), and every malformed message it sent is
dead-lettered. The 60 s run at 200/s takes too long for the suite; this one runs 20 s."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest

from devkit.dead_letters import dead_letters_since, tally
from devkit.harness import WorkerProcess

pytestmark = pytest.mark.integration
RATE, SECONDS, MALFORMED = 200, 20, 0.01
WORLD_TOPICS = ("world.events", "world.ticks")


def _summary_counts(stdout: str) -> tuple[Counter[str], Counter[str]]:
    """The loadgen summary's table: valid events and malformed messages per topic."""
    valid: Counter[str] = Counter()
    malformed: Counter[str] = Counter()
    for topic, events, bad in re.findall(r"^(\S+\.\S+)\s+([\d,]+)\s+([\d,]+)$", stdout, re.M):
        valid[topic], malformed[topic] = int(events.replace(",", "")), int(bad.replace(",", ""))
    return valid, malformed


async def test_the_world_flow_accepts_the_load_and_dead_letters_only_the_malformed(
    services: dict[str, str], worker: WorkerProcess
) -> None:
    run_id = uuid.uuid4().hex[:8]
    prefix = f"lc-{run_id}-"
    started = datetime.now(UTC)
    command = [
        *(sys.executable, "-m", "scribe", "loadgen", "--rate", str(RATE)),
        *("--seconds", str(SECONDS), "--malformed", str(MALFORMED), "--worlds", "100"),
        *("--prefix", prefix, "--run-id", run_id),
    ]
    result = await asyncio.to_thread(
        subprocess.run,
        command,
        env={**os.environ, **services},
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    valid, malformed = _summary_counts(result.stdout)
    assert valid["world.events"] and valid["world.ticks"], result.stdout
    bad_key = f"{prefix}bad-{run_id}".encode()

    letters = [
        letter
        for letter in await dead_letters_since(
            services["SCRIBE_KAFKA_URL"],
            started,
            enough=lambda found: sum(d.key == bad_key for d in found) >= malformed.total(),
            timeout=90,
        )
        if letter.key is not None and letter.key.startswith(prefix.encode())
    ]
    bad = Counter(d.topic for d in letters if d.key == bad_key)
    assert bad == +malformed, (bad, malformed)  # every malformed message, on its own topic
    meant_valid = [d for d in letters if d.key != bad_key and d.topic in WORLD_TOPICS]
    sent_valid = sum(valid[topic] for topic in WORLD_TOPICS)
    assert len(meant_valid) < 0.01 * sent_valid, (
        f"{len(meant_valid)} of {sent_valid} valid world events and ticks dead-lettered: "
        f"{tally(meant_valid)}; e.g. {meant_valid[0].reason}"
    )
