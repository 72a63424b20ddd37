"""The dead-letter round trip on an embedded stack of its own with a real worker: the bad-input
corpus and 100 usage events of a model the catalog has no price for land in usage.events.dlq;
once the price is added (SCRIBE_MODEL_CATALOG, the worker restarted to read it),
`scribe dlq replay usage.events --kind unpriced` puts the 100 in the ledger exactly once, a
second replay changes no total, and the truly bad input is still (or again) in the DLQ with
its reason. Its own stack: any other worker on usage.events would dead-letter the replays
again with the packaged catalog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import TopicPartition

from agents.usage.flow import USAGE
from agents.usage.synthetic import synthetic_usage
from devkit.harness import Record, WorkerProcess, group_offsets, new_worker, read_until
from devkit.stack import LocalStack
from schemas import encode
from schemas.events import UsageEvent
from schemas.model_catalog import CATALOG_ENV, CATALOG_PATH, parse_catalog
from tests.faults.corpus import VALID, Case, corpus
from tests.faults.observe import (
    UsageTotals,
    dead_letters,
    eventually,
    publish_raw,
    usage_totals,
)
from topics.catalog import USAGE_EVENTS
from topics.dlq import H_ERROR, H_ERROR_KIND, H_SOURCE_OFFSET
from topics.dlq_replay import H_REPLAYED_AT, H_REPLAYED_FROM

pytestmark = [pytest.mark.integration, pytest.mark.once]

SERVICE, MODEL = "acme", "acme/dlq-replay-model"  # not in the packaged catalog
PRICE = {
    "service": SERVICE,
    "model": MODEL,
    "kind": "text",
    "quality": 1,
    "free": False,
    "input_per_mtok": "0.70",
    "output_per_mtok": "2.10",
    "per_image": "0",
}
EVENTS = 100
CORPUS_UNPRICED = "unpriced"  # the corpus case whose model stays without a price


@pytest.fixture(scope="module")
def stack_env(state_dir: Path) -> Iterator[dict[str, str]]:
    with LocalStack(state_dir / "dlq-stack").running() as env:
        yield env | {"SCRIBE_FAST_REBALANCE": "1", "SCRIBE_WORLD_TICK_SECONDS": "0"}


def scribe_cli(
    env: dict[str, str], state_dir: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """`scribe ARGS` as an on-call engineer runs it, against the test's stack."""
    result = subprocess.run(
        [sys.executable, "-m", "scribe", *args],
        env={**os.environ, **env, "SCRIBE_STATE_DIR": str(state_dir)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"scribe {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def unpriced_usage(run_id: str) -> list[tuple[str, bytes, UsageEvent]]:
    """EVENTS usage events of the shared generator, moved to the unpriced model without a
    cost_usd: (key, value, event)."""
    made = []
    for item in synthetic_usage(run_id, EVENTS, users=10):
        fields: dict[str, Any] = {k: v for k, v in item.fields.items() if k != "cost_usd"}
        fields |= {"service": SERVICE, "model": MODEL, "free_tier": False, "images": 0}
        event = UsageEvent.model_validate(fields)
        made.append((event.user_id, encode(event), event))
    return made


def catalog_with_price(path: Path) -> Path:
    raw = json.loads(CATALOG_PATH.read_text())
    raw["version"] = f"{raw['version']}+dlq-replay"
    raw["models"].append(PRICE)
    path.write_text(json.dumps(raw))
    return path


def catalog_version(catalog_file: Path) -> str:
    return parse_catalog(catalog_file.read_text()).version


def expected_cost(events: list[UsageEvent], catalog_file: Path) -> Decimal:
    price = parse_catalog(catalog_file.read_text()).get(SERVICE, MODEL)
    million = Decimal(1_000_000)
    return sum(
        (
            (
                price.input_per_mtok * e.input_tokens / million
                + price.output_per_mtok * e.output_tokens / million
            ).quantize(Decimal("1e-12"), rounding=ROUND_HALF_EVEN)
            for e in events
        ),
        Decimal(0),
    )


def event_id(record: Record) -> str | None:
    try:
        loaded = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        return None
    return loaded.get("event_id") if isinstance(loaded, dict) else None


async def wait_caught_up(kafka_url: str, worker: WorkerProcess) -> None:
    """Until the worker's usage group has committed every record usage.events holds now."""
    records = await read_until(kafka_url, USAGE_EVENTS.name, done=lambda _: False, timeout=3)
    ends: dict[int, int] = {}
    for record in records:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)

    async def committed_all() -> bool:
        async with group_offsets(kafka_url, USAGE.group_of(worker.app_id)) as consumer:
            for partition, end in ends.items():
                done = await consumer.committed(TopicPartition(USAGE_EVENTS.name, partition))
                if done is None or done < end:
                    return False
        return True

    assert await eventually(committed_all, timeout=120), worker.log_tail()


def listed_kinds(env: dict[str, str], state_dir: Path) -> dict[str, int]:
    """What `scribe dlq list --json` counts for usage.events, by kind."""
    listed = json.loads(scribe_cli(env, state_dir, "dlq", "list", "--json").stdout)
    kinds: dict[str, int] = listed[USAGE_EVENTS.name]["kinds"]
    return kinds


async def held_kinds(kafka_url: str) -> Counter[str]:
    """What usage.events.dlq holds, by kind, read independently of `scribe dlq`. A dead letter
    may be stored twice (at-least-once), so expected counts come from here."""
    records = await read_until(kafka_url, USAGE_EVENTS.dlq_name, done=lambda _: False, timeout=3)
    return Counter(r.headers[H_ERROR_KIND].decode() for r in records)


def replay(env: dict[str, str], state_dir: Path, topic: str, *options: str) -> str:
    return scribe_cli(env, state_dir, "dlq", "replay", topic, "--kind", "unpriced", *options).stdout


async def dead_letter_unpriced_input(
    env: dict[str, str], worker: WorkerProcess, marker: str
) -> tuple[dict[bytes, Case], list[UsageEvent]]:
    """Publish the usage corpus and EVENTS unpriced events; return once all the invalid cases
    (by key) and the events are in the DLQ."""
    kafka_url = env["SCRIBE_KAFKA_URL"]
    cases = corpus(USAGE_EVENTS, marker)
    invalid = {f"{marker}:{c.name}".encode(): c for c in cases if c.expected != VALID}
    fresh = unpriced_usage(f"dlq-{marker}")
    fresh_ids = {event.event_id for _, _, event in fresh}
    await publish_raw(
        kafka_url,
        [(USAGE_EVENTS.name, f"{marker}:{c.name}".encode(), c.value) for c in cases]
        + [(USAGE_EVENTS.name, key.encode(), value) for key, value, _ in fresh],
    )

    def ours(record: Record) -> bool:
        return record.key in invalid or event_id(record) in fresh_ids

    def all_dead_lettered(kept: list[Record]) -> bool:
        return {r.key for r in kept} >= set(invalid) and {event_id(r) for r in kept} >= fresh_ids

    dlq = await read_until(kafka_url, USAGE_EVENTS.dlq_name, all_dead_lettered, ours, timeout=120)
    assert all_dead_lettered(dlq), worker.log_tail()
    assert all(r.headers[H_ERROR_KIND] == b"unpriced" for r in dlq if event_id(r) in fresh_ids)
    return invalid, [event for _, _, event in fresh]


def check_show(env: dict[str, str], state_dir: Path, held: int) -> None:
    """`show` prints the corpus's NUL, RTL override, non-UTF-8 and oversized input without
    one raw control character."""
    shown = scribe_cli(env, state_dir, "dlq", "show", "usage.events.dlq", "--limit", "1000")
    assert all(ch.isprintable() or ch == "\n" for ch in shown.stdout)
    assert f"{held} shown of {held} matching" in shown.stderr
    assert "not UTF-8" in shown.stdout and "truncated" in shown.stdout
    assert "\\x00" in shown.stdout and "\\u202e" in shown.stdout
    only = scribe_cli(env, state_dir, "dlq", "show", "usage.events", "--kind", "size")
    assert "1 shown of 1 matching" in only.stderr, only.stderr
    assert "kind size" in only.stdout and "holds only the start" in only.stdout


async def check_counted_once(
    db: asyncpg.Connection, fresh: list[UsageEvent], catalog_file: Path
) -> UsageTotals:
    """Each event once in the ledger and the rollups, priced from the added price."""
    users = sorted({event.user_id for event in fresh})
    totals = await usage_totals(db, users)
    assert totals.rows == totals.daily_requests == totals.monthly_requests == EVENTS
    assert totals.daily_cost == totals.monthly_cost == expected_cost(fresh, catalog_file)
    versions = await db.fetch(
        "SELECT DISTINCT price_catalog_version FROM usage_events WHERE user_id = ANY($1)", users
    )
    assert [r[0] for r in versions] == [catalog_version(catalog_file)]
    return totals


async def replayed_count(kafka_url: str) -> int:
    """Messages on usage.events that a replay sent, each naming the dead letter it came from."""
    replayed = await read_until(
        kafka_url,
        USAGE_EVENTS.name,
        done=lambda _: False,
        match=lambda r: H_REPLAYED_FROM in r.headers,
        timeout=3,
    )
    assert all(r.headers[H_REPLAYED_FROM].startswith(b"usage.events.dlq/") for r in replayed)
    assert all(H_REPLAYED_AT in r.headers for r in replayed)
    return len(replayed)


async def check_bad_input_kept(
    kafka_url: str, invalid: dict[bytes, Case], before: Counter[str]
) -> Counter[str]:
    """Every bad case is still in the DLQ with its kind, and only unpriced ones were added;
    returns what the DLQ holds by kind."""
    letters = await dead_letters(kafka_url, USAGE_EVENTS, set(invalid))
    assert {r.key for r in letters} == set(invalid)
    for record in letters:
        assert record.key is not None
        assert record.headers[H_ERROR_KIND] == invalid[record.key].expected.encode()
    after = await held_kinds(kafka_url)
    assert after - Counter(unpriced=after["unpriced"]) == before - Counter(
        unpriced=before["unpriced"]
    )
    return after


# Two worker starts, an embedded stack and six CLI runs: about four minutes on 2 busy cores.
@pytest.mark.timeout(600)
async def test_replay_after_the_price_is_added_counts_each_event_once(
    stack_env: dict[str, str], state_dir: Path, tmp_path: Path
) -> None:
    kafka_url = stack_env["SCRIBE_KAFKA_URL"]
    cli_dir = state_dir / "dlq-cli"
    app_id = f"scribe-dlq-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex[:10]
    worker = new_worker(stack_env, state_dir / "dlq-workers", app_id)
    db = await asyncpg.connect(stack_env["SCRIBE_DATABASE_URL"])
    try:
        worker.start()
        invalid, fresh = await dead_letter_unpriced_input(stack_env, worker, marker)
        users = sorted({event.user_id for event in fresh})
        assert (await usage_totals(db, users)).rows == 0

        # This stack's DLQ holds only this test's input: `list` counts exactly what it holds.
        held = await held_kinds(kafka_url)
        assert set(held) == {c.expected for c in invalid.values()}
        assert held["unpriced"] >= EVENTS + 1
        assert listed_kinds(stack_env, cli_dir) == dict(held)
        check_show(stack_env, cli_dir, sum(held.values()))

        dry = replay(stack_env, cli_dir, "usage.events", "--dry-run")
        assert dry.count("would publish usage.events.dlq/") == held["unpriced"], dry
        assert f"would publish {held['unpriced']}" in dry

        # The price is added: a catalog file with it, which the restarted worker reads.
        worker.stop()
        catalog_file = catalog_with_price(tmp_path / "catalog.json")
        assert await held_kinds(kafka_url) == held  # the dry run sent nothing
        worker = new_worker(stack_env | {CATALOG_ENV: str(catalog_file)}, worker.state_dir, app_id)
        worker.start()

        # Sent: each distinct message once (the 100 and the corpus's unpriced case).
        first = replay(stack_env, cli_dir, "usage.events")
        assert f"matched {held['unpriced']}, published {EVENTS + 1}" in first, first
        await wait_caught_up(kafka_url, worker)

        totals = await check_counted_once(db, fresh, catalog_file)

        # The corpus's unpriced case (a model still without a price) failed again: back in
        # the DLQ with its reason and its new offset on usage.events.
        corpus_unpriced = f"{marker}:{CORPUS_UNPRICED}".encode()
        again = await dead_letters(kafka_url, USAGE_EVENTS, {corpus_unpriced})
        assert len({r.headers[H_SOURCE_OFFSET] for r in again}) == 2, again
        assert all(r.headers[H_ERROR_KIND] == b"unpriced" for r in again)
        assert all(b"no-such-model-7" in r.headers[H_ERROR] for r in again)

        before_second = await held_kinds(kafka_url)
        second = replay(stack_env, cli_dir, "usage.events.dlq")
        # The corpus's unpriced case is in the DLQ twice now, and is sent once.
        assert f"matched {before_second['unpriced']}, published {EVENTS + 1}" in second, second
        await wait_caught_up(kafka_url, worker)
        assert await usage_totals(db, users) == totals

        assert await replayed_count(kafka_url) == 2 * (EVENTS + 1)
        after = await check_bad_input_kept(kafka_url, invalid, held)
        assert after["unpriced"] == before_second["unpriced"] + 1  # failed again, once
        assert listed_kinds(stack_env, cli_dir) == dict(after)
        print(
            f"DLQ-REPLAY | unpriced dead letters: {held['unpriced']} before the price "
            f"({held['unpriced'] - EVENTS - 1} extra copies), {after['unpriced']} after two "
            f"replays of {EVENTS + 1} distinct messages each | ledger rows {totals.rows}, "
            f"daily requests {totals.daily_requests}, cost {totals.daily_cost}"
        )
        assert worker.alive(), worker.log_tail()
    finally:
        await db.close()
        worker.stop()
