"""`scribe publish`: every line validated, rejects with line numbers, non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from devkit.harness import read_until
from schemas import encode
from schemas.events import UsageEvent, WorldEvent
from schemas.examples import example


def _publish(path: Path, env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scribe", "publish", "usage.events", str(path), *flags],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _lines(tmp_path: Path, marker: str) -> Path:
    good = encode(example(UsageEvent, user_id=marker)).decode()
    bad_type = orjson.loads(good) | {"input_tokens": "many"}
    path = tmp_path / "events.jsonl"
    path.write_text(
        "\n".join([good, "", orjson.dumps(bad_type).decode(), "{oops", good.replace("use-", "u2-")])
        + "\n"
    )
    return path


def test_rejects_are_listed_with_line_numbers_and_nothing_is_published(tmp_path: Path) -> None:
    # No broker is needed: with rejects and no --skip-invalid, nothing is sent.
    result = _publish(_lines(tmp_path, "cli-user"), {"SCRIBE_KAFKA_URL": "127.0.0.1:1"})
    assert result.returncode == 1
    assert "events.jsonl:3: rejected: schema: input_tokens" in result.stderr
    assert "events.jsonl:4: rejected: json: malformed JSON" in result.stderr
    assert "nothing published" in result.stderr


def test_a_world_event_without_its_payload_fields_is_rejected_naming_line_and_field(
    tmp_path: Path,
) -> None:
    loaded = encode(example(WorldEvent, type="world_loaded")).decode()
    no_kind = orjson.loads(encode(example(WorldEvent, type="location_created")))
    del no_kind["payload"]["kind"]
    path = tmp_path / "world.jsonl"
    path.write_text(f"{loaded}\n{orjson.dumps(no_kind).decode()}\n")
    result = subprocess.run(
        [sys.executable, "-m", "scribe", "publish", "world.events", str(path)],
        env={**os.environ, "SCRIBE_KAFKA_URL": "127.0.0.1:1"},  # nothing may be sent
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "world.jsonl:2: rejected: schema: payload.kind: Field required" in result.stderr
    assert "world.jsonl:1:" not in result.stderr
    assert "1 line(s) rejected; nothing published" in result.stderr


def test_an_unknown_topic_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scribe", "publish", "usage.event", "-"],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "unknown topic 'usage.event'" in result.stderr


@pytest.mark.integration
async def test_skip_invalid_publishes_the_valid_lines(
    tmp_path: Path, services: dict[str, str], kafka_url: str
) -> None:
    marker = f"cli-{uuid.uuid4().hex[:8]}"
    result = _publish(_lines(tmp_path, marker), services, "--skip-invalid")
    assert result.returncode == 1, "rejects still give a non-zero exit"
    assert "published 2 event(s) to usage.events" in result.stdout
    records = await read_until(
        kafka_url,
        "usage.events",
        done=lambda kept: len(kept) >= 2,
        match=lambda r: r.key == marker.encode(),
    )
    assert len(records) == 2
