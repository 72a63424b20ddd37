"""Usage without cost_usd is priced from the shared catalog; usage that cannot be right goes
to usage.events.dlq with the reason, and nothing of it reaches the ledger."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg
import orjson
import pytest

from agents.usage.flow import USAGE
from agents.usage.synthetic import SyntheticUsage
from devkit.harness import WorkerProcess, read_until
from schemas import encode
from schemas.events import UsageEvent
from schemas.examples import example
from schemas.model_catalog import load_catalog
from tests.integration.usage_pipeline import expected_cost, publish, wait_committed_past
from topics.catalog import USAGE_EVENTS
from topics.dlq import H_ERROR, H_ERROR_KIND

pytestmark = pytest.mark.integration


async def test_unpriced_usage_is_priced_from_the_catalog_and_impossible_usage_dead_lettered(
    kafka_url: str, worker: WorkerProcess, db: asyncpg.Connection
) -> None:
    user = f"up-{uuid.uuid4().hex[:10]}"
    common = {"user_id": user, "cost_usd": None, "free_tier": False}
    priced = example(
        UsageEvent, **common, model="gemini-2.5-pro", input_tokens=1234, output_tokens=567
    )
    unknown = example(UsageEvent, **common, service="acme", model="nobody/unknown-model")
    too_big = example(UsageEvent, **common, input_tokens=1_500_000, output_tokens=600_000)
    events = (unknown, too_big, priced)
    last = await publish(kafka_url, [SyntheticUsage(user.encode(), encode(e), {}) for e in events])
    await wait_committed_past(
        kafka_url, USAGE.group_of(worker.app_id), last, timeout=60, log=worker.log_tail
    )

    dead = await read_until(
        kafka_url,
        USAGE_EVENTS.dlq_name,
        done=lambda kept: len(kept) >= 2,
        match=lambda r: r.key == user.encode(),
    )
    by_id = {orjson.loads(r.value or b"{}")["event_id"]: r.headers for r in dead}
    assert set(by_id) == {unknown.event_id, too_big.event_id}
    assert by_id[unknown.event_id][H_ERROR_KIND] == b"unpriced"
    assert b"nobody/unknown-model" in by_id[unknown.event_id][H_ERROR]
    assert by_id[too_big.event_id][H_ERROR_KIND] == b"implausible"
    assert b"2,100,000 tokens" in by_id[too_big.event_id][H_ERROR]

    rows = await db.fetch(
        "SELECT event_id, cost_usd, price_catalog_version FROM usage_events WHERE user_id = $1",
        user,
    )
    assert [(r["event_id"], r["cost_usd"], r["price_catalog_version"]) for r in rows] == [
        (
            priced.event_id,
            expected_cost(priced.model_dump(exclude_none=True)),
            load_catalog().version,
        )
    ]
    assert rows[0]["cost_usd"] > Decimal(0)
