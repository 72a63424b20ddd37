"""A usage load whose exact totals are known in advance: the engine tests and the scale-out
benchmark publish it, then compare what PostgreSQL holds with what was sent.

Every id of a run starts with its `run_id`, so runs sharing one database are told apart, and a
share of the events is published twice (a producer retry) to prove they count once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import asyncpg
from aiokafka import AIOKafkaProducer

from runtime.settings import kafka_bootstrap_servers
from schemas import encode
from schemas.events import UsageEvent
from topics.catalog import USAGE_EVENTS

MODELS = (("gemini", "gemini-2.5-flash"), ("openrouter", "llama-3.1-70b"), ("gemini", "imagen-4"))
SEND_ATTEMPTS = 5

DailyKey = tuple[str, date, str, str]


@dataclass(frozen=True)
class DailyTotal:
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal

    def __add__(self, other: DailyTotal) -> DailyTotal:
        return DailyTotal(
            self.requests + other.requests,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cost_usd + other.cost_usd,
        )


def usage_events(
    run_id: str, count: int, users: int = 40, seed: int = 11, now: datetime | None = None
) -> list[UsageEvent]:
    """`count` distinct usage events over `users` users of this run, priced to 12 places, in
    the 30 hours before `now` (the clock's by default)."""
    rng = random.Random(seed)
    start = (now or datetime.now(UTC)).replace(microsecond=0) - timedelta(hours=30)
    events = []
    for i in range(count):
        service, model = MODELS[i % len(MODELS)]
        events.append(
            UsageEvent(
                event_id=f"{run_id}-e{i}",
                request_id=f"{run_id}-r{i}",
                user_id=f"{run_id}-u{rng.randrange(users)}",
                service=service,
                model=model,
                input_tokens=rng.randint(1, 8000),
                output_tokens=rng.randint(0, 4000),
                images=0,
                free_tier=rng.random() < 0.3,
                occurred_at=start + timedelta(seconds=rng.randint(0, 30 * 3600)),
                cost_usd=Decimal(rng.randint(1, 9_000_000_000)).scaleb(-12),
            )
        )
    return events


def expected_daily(events: Sequence[UsageEvent]) -> dict[DailyKey, DailyTotal]:
    """What `usage_daily` must hold for these events: each event_id once, in its UTC day."""
    totals: dict[DailyKey, DailyTotal] = {}
    seen: set[str] = set()
    for e in events:
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        key = (e.user_id, e.occurred_at.astimezone(UTC).date(), e.service, e.model)
        row = DailyTotal(1, e.input_tokens, e.output_tokens, e.cost_usd or Decimal(0))
        totals[key] = totals[key] + row if key in totals else row
    return totals


def with_redeliveries(
    events: Sequence[UsageEvent], share: float, seed: int = 5
) -> list[UsageEvent]:
    """The events plus a `share` of them sent again later, as a retrying producer would."""
    rng = random.Random(seed)
    placed = [(float(i), e) for i, e in enumerate(events)]
    for i, event in enumerate(events):
        if rng.random() < share:
            placed.append((rng.uniform(i + 0.5, len(events)), event))
    return [event for _, event in sorted(placed, key=lambda p: p[0])]


async def publish_usage(
    kafka_url: str,
    events: Sequence[UsageEvent],
    rate: float | None = None,
    report: Callable[[str], None] = lambda _: None,
    on_progress: Callable[[int], None] = lambda _: None,
) -> int:
    """Send every event (`acks=all`), at about `rate` events/s when given; an event whose send
    fails is sent again (the ledger counts an event_id once). Returns the count sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap_servers(kafka_url),
        acks="all",
        linger_ms=5,
        request_timeout_ms=30_000,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    try:
        started = time.monotonic()
        next_report = started + 5
        chunk = 200
        for first in range(0, len(events), chunk):
            batch = events[first : first + chunk]
            await _send_all(producer, batch)
            sent = first + len(batch)
            on_progress(sent)
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if time.monotonic() >= next_report:
                next_report += 5
                report(f"  published {sent:,}/{len(events):,} usage events")
        return len(events)
    finally:
        await producer.stop()


async def _send_all(producer: AIOKafkaProducer, batch: Sequence[UsageEvent]) -> None:
    pending = list(batch)
    for attempt in range(1, SEND_ATTEMPTS + 1):
        futures = [
            await producer.send(USAGE_EVENTS.name, encode(e), key=USAGE_EVENTS.key_of(e))
            for e in pending
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [e for e, r in zip(pending, results, strict=True) if isinstance(r, Exception)]
        if not failed:
            return
        if attempt == SEND_ATTEMPTS:
            error = next(r for r in results if isinstance(r, Exception))
            raise RuntimeError(f"{len(failed)} usage events not acknowledged: {error!r}")
        pending = failed
        await asyncio.sleep(0.5 * attempt)


async def ledger_daily(conn: asyncpg.Connection, run_id: str) -> dict[DailyKey, DailyTotal]:
    rows = await conn.fetch(
        "SELECT user_id, day, service, model, requests, input_tokens, output_tokens, cost_usd "
        "FROM usage_daily WHERE starts_with(user_id, $1)",
        f"{run_id}-",
    )
    return {
        (r["user_id"], r["day"], r["service"], r["model"]): DailyTotal(
            r["requests"], r["input_tokens"], r["output_tokens"], r["cost_usd"]
        )
        for r in rows
    }


async def ledger_count(conn: asyncpg.Connection, run_id: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM usage_events WHERE starts_with(event_id, $1)", f"{run_id}-"
    )
    return count


async def wait_until_stored(
    conn: asyncpg.Connection,
    run_id: str,
    expected: int,
    timeout: float,
    report: Callable[[str], None] = lambda _: None,
) -> int:
    """Poll the ledger until it holds `expected` events of the run or the timeout passes;
    return the count it holds."""
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 10
    while True:
        stored = await ledger_count(conn, run_id)
        if stored >= expected or time.monotonic() > deadline:
            return stored
        if time.monotonic() >= next_report:
            next_report += 10
            report(f"  ledger holds {stored:,}/{expected:,} events of {run_id}")
        await asyncio.sleep(0.5)
