"""Budget alerts happen once per user, month and threshold — also when a thousand events of
one user cross a threshold at once and when they are delivered again; the router's budget
state follows the spend exactly."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from agents.usage.flow import USAGE
from agents.usage.synthetic import SyntheticUsage
from devkit.harness import Record, WorkerProcess, read_until
from schemas import decode, encode
from schemas.events import BudgetAlert, BudgetState, UsageEvent
from schemas.examples import example
from tests.integration.usage_pipeline import publish, scribe, wait_committed_past
from topics.catalog import BUDGET_ALERTS, BUDGET_STATE

pytestmark = pytest.mark.integration

BUDGET = Decimal(10)
COST = Decimal("0.009")


def burst(user: str, label: str, count: int) -> list[SyntheticUsage]:
    """`count` events of `user`, all within one second, each costing COST."""
    moment = datetime.now(UTC).replace(microsecond=0)
    events = [
        example(
            UsageEvent,
            event_id=f"{user}-{label}-{i}",
            user_id=user,
            cost_usd=COST,
            occurred_at=moment + timedelta(microseconds=i * 997),
        )
        for i in range(count)
    ]
    return [SyntheticUsage(user.encode(), encode(e), {}) for e in events]


async def records_of(kafka_url: str, topic: str, user: str, at_least: int) -> list[Record]:
    """Every record of `user` on `topic`: waits for `at_least`, then reads on for a few
    seconds so that a duplicate would be seen too."""
    key = user.encode()
    found = await read_until(
        kafka_url, topic, done=lambda kept: len(kept) >= at_least, match=lambda r: r.key == key
    )
    if len(found) < at_least:
        return found
    return await read_until(
        kafka_url, topic, done=lambda _: False, match=lambda r: r.key == key, timeout=4
    )


async def publish_and_wait(
    kafka_url: str, worker: WorkerProcess, items: list[SyntheticUsage]
) -> float:
    started = time.monotonic()
    last = await publish(kafka_url, items)
    took = time.monotonic() - started
    await wait_committed_past(
        kafka_url, USAGE.group_of(worker.app_id), last, timeout=60, log=worker.log_tail
    )
    return took


async def all_alerts_published(db: asyncpg.Connection, user: str) -> None:
    deadline = time.monotonic() + 30
    while await db.fetchval(
        "SELECT count(*) FROM budget_alerts WHERE user_id = $1 AND published_at IS NULL", user
    ):
        assert time.monotonic() < deadline, "alerts stayed unpublished"
        await asyncio.sleep(0.2)


async def test_a_thousand_events_crossing_80_percent_at_once_make_exactly_one_alert(
    services: dict[str, str], kafka_url: str, worker: WorkerProcess, db: asyncpg.Connection
) -> None:
    user = f"ub-{uuid.uuid4().hex[:10]}"
    assert f"budget for {user}: 10 USD per month" in await scribe(
        services, "budget", "set", user, "10"
    )

    took = await publish_and_wait(kafka_url, worker, burst(user, "a", 1000))
    print(f"  1,000 events of {user} (9 USD of 10, within one second) published in {took:.2f} s")
    await all_alerts_published(db, user)
    alerts = [
        decode(r.value or b"", BudgetAlert)
        for r in await records_of(kafka_url, BUDGET_ALERTS.name, user, at_least=2)
    ]
    assert sorted(a.threshold_pct for a in alerts) == [50, 80]
    eighty = next(a for a in alerts if a.threshold_pct == 80)
    assert eighty.budget_usd == BUDGET
    assert BUDGET * Decimal("0.8") <= eighty.spent_usd <= 1000 * COST

    # The same thousand again: counted once, so nothing new.
    await publish_and_wait(kafka_url, worker, burst(user, "a", 1000))
    spent = await db.fetchval("SELECT sum(cost_usd) FROM usage_monthly WHERE user_id = $1", user)
    assert spent == 1000 * COST

    # 200 more cross 100 %.
    await publish_and_wait(kafka_url, worker, burst(user, "b", 200))
    await all_alerts_published(db, user)
    alerts = [
        decode(r.value or b"", BudgetAlert)
        for r in await records_of(kafka_url, BUDGET_ALERTS.name, user, at_least=3)
    ]
    assert sorted(a.threshold_pct for a in alerts) == [50, 80, 100]
    assert len({a.alert_id for a in alerts}) == 3
    rows = await db.fetch(
        "SELECT threshold_pct, count(*) AS n FROM budget_alerts WHERE user_id = $1 GROUP BY 1",
        user,
    )
    assert {r["threshold_pct"]: r["n"] for r in rows} == {50: 1, 80: 1, 100: 1}

    # The router's view: the latest state (highest version) carries the exact spend.
    records = await records_of(kafka_url, BUDGET_STATE.name, user, at_least=1)
    states = [decode(r.value, BudgetState) for r in records if r.value is not None]
    latest = max(states, key=lambda s: s.version)
    assert latest.spent_usd == 1200 * COST
    assert (latest.budget_usd, latest.remaining_usd, latest.exhausted) == (BUDGET, Decimal(0), True)
    assert latest.thresholds_reached == [50, 80, 100]
    assert latest.month == datetime.now(UTC).date().replace(day=1)
    assert [s.version for s in states] == sorted({s.version for s in states})

    # Removing the budget leaves a tombstone for the router's table.
    await scribe(services, "budget", "remove", user)
    tombstones = await read_until(
        kafka_url,
        BUDGET_STATE.name,
        done=lambda kept: len(kept) >= 1,
        match=lambda r: r.key == user.encode() and r.value is None,
        timeout=15,
    )
    assert len(tombstones) == 1
