"""`make demo`: the pipeline on the embedded stack (or SCRIBE_*_URL) under a mixed load.

Starts what it needs, runs one worker, publishes valid events to every input topic with a
sprinkle of bad ones, prints progress, then a summary of what came out; stops what it started.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg
import click
from aiokafka import AIOKafkaProducer

from schemas import encode
from schemas.events import AIRequest, CacheInvalidation, Event, UsageEvent, WorldEvent, WorldTick
from schemas.examples import example
from scribe.settings import Settings, kafka_bootstrap_servers
from scribe.stack import LocalStack
from scribe.workers import WorkerProcess, new_worker, read_until
from topics.catalog import INPUT_TOPICS, TopicSpec, topic_for
from topics.publisher import Publisher

EVENTS_PER_SECOND = 200
BAD_INPUT_SHARE = 0.02
PROGRESS_EVERY_S = 5.0


@dataclass
class LoadTally:
    published: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)
    usage_cost: Decimal = Decimal(0)
    usage_ids: set[str] = field(default_factory=set)
    # Bad messages carry this key, so a rerun on a stack still running counts only its own.
    bad_key: bytes = field(default_factory=lambda: b"demo-bad-" + uuid.uuid4().hex[:8].encode())


def _say(line: str) -> None:
    click.echo(line, err=True)


@contextmanager
def _services(settings: Settings) -> Iterator[dict[str, str]]:
    if settings.kafka_url and settings.database_url and settings.redis_url:
        yield {
            "SCRIBE_KAFKA_URL": settings.kafka_url,
            "SCRIBE_DATABASE_URL": settings.database_url,
            "SCRIBE_REDIS_URL": settings.redis_url,
        }
        return
    _say("starting the embedded stack (Tansu, PostgreSQL, Redis) ...")
    with LocalStack(settings.state_dir).running(report=_say) as env:
        yield env


def _next_event(rng: random.Random, tick: int) -> Event:
    user = f"demo-user-{rng.randint(1, 20)}"
    world = f"demo-world-{rng.randint(1, 5)}"
    roll = rng.random()
    if roll < 0.45:
        cost = Decimal(rng.randint(1, 500_000)).scaleb(-9)
        return example(UsageEvent, user_id=user, cost_usd=cost, input_tokens=rng.randint(1, 4000))
    if roll < 0.65:
        return example(AIRequest, user_id=user, priority=rng.choice(["urgent", "normal", "low"]))
    if roll < 0.8:
        return example(WorldEvent, world_id=world)
    if roll < 0.9:
        return example(WorldTick, world_id=world, tick=tick)
    return example(CacheInvalidation, keys=[f"world:{world}", f"user:{user}"])


DEMO_WORLDS = [f"demo-world-{n}" for n in range(1, 6)]


async def _load_worlds(env: dict[str, str]) -> None:
    """Give each demo world a village to simulate before the load starts ticking it."""
    async with Publisher(kafka_bootstrap_servers(env["SCRIBE_KAFKA_URL"])) as publisher:
        await publisher.publish_many(
            example(WorldEvent, world_id=w, type="world_loaded", payload={"template": "village"})
            for w in DEMO_WORLDS
        )
    conn = await asyncpg.connect(env["SCRIBE_DATABASE_URL"])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            count = await conn.fetchval(
                "SELECT count(*) FROM world_state WHERE world_id = ANY($1::text[])", DEMO_WORLDS
            )
            if count == len(DEMO_WORLDS):
                return
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def _world_summary(database_url: str) -> bool:
    """Worlds ticked, one world's summary line, and a replay of every demo world."""
    from scribe.cli.world import current_state, replay_world, summary

    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetch(
            "SELECT world_id FROM world_state WHERE world_id = ANY($1::text[]) ORDER BY 1",
            DEMO_WORLDS,
        )
    finally:
        await conn.close()
    states = [(await current_state(database_url, row["world_id"]))[1] for row in stored]
    click.echo(f"\nworlds: {len(states)} ticked, {sum(s.tick for s in states):,} ticks in all")
    if states:
        click.echo("  " + summary(states[0])[0])
    _say("replaying the demo worlds from their stored events ...")
    results = [await replay_world(database_url, state.world_id) for state in states]
    matched = sum(result.matches for result in results)
    click.echo(f"  replay: {matched} of {len(results)} worlds match their live state")
    return len(states) == len(DEMO_WORLDS) and matched == len(results)


async def _publish_load(kafka_url: str, seconds: float, tally: LoadTally) -> None:
    rng = random.Random(7)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap_servers(kafka_url), acks="all", linger_ms=5
    )
    await producer.start()
    try:
        started = time.monotonic()
        next_progress = started + PROGRESS_EVERY_S
        sent = 0
        while (elapsed := time.monotonic() - started) < seconds:
            target = int(elapsed * EVENTS_PER_SECOND) + 1
            while sent < target:
                sent += 1
                if rng.random() < BAD_INPUT_SHARE:
                    spec = rng.choice(INPUT_TOPICS)
                    await producer.send(spec.name, b'{"not": "an event"', key=tally.bad_key)
                    tally.bad[spec.name] += 1
                    continue
                event = _next_event(rng, sent)
                spec = topic_for(event)
                await producer.send(spec.name, encode(event), key=spec.key_of(event))
                tally.published[spec.name] += 1
                if isinstance(event, UsageEvent):
                    tally.usage_ids.add(event.event_id)
                    tally.usage_cost += event.cost_usd or Decimal(0)
            if time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY_S
                _say(
                    f"  {elapsed:5.0f}/{seconds:.0f} s  published {sum(tally.published.values()):,}"
                    f" valid + {sum(tally.bad.values()):,} bad"
                )
            await asyncio.sleep(0.02)
        await producer.flush()
    finally:
        await producer.stop()


async def _usage_in_postgres(
    database_url: str, ids: set[str], timeout: float
) -> tuple[int, Decimal]:
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            row = await conn.fetchrow(
                "SELECT count(*), coalesce(sum(cost_usd), 0) FROM usage_events "
                "WHERE event_id = ANY($1::text[])",
                list(ids),
            )
            assert row is not None  # an aggregate always returns one row
            count, cost = row
            if count >= len(ids) or time.monotonic() > deadline:
                return int(count), Decimal(cost)
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def _dead_letters(kafka_url: str, spec: TopicSpec, key: bytes, expected: int) -> list[bytes]:
    records = await read_until(
        kafka_url,
        spec.dlq_name,
        done=lambda kept: len(kept) >= expected,
        match=lambda r: r.key == key,
        timeout=15 if expected else 2,
    )
    return [r.headers.get("scribe-error", b"") for r in records]


async def _summarize(env: dict[str, str], tally: LoadTally, worker: WorkerProcess) -> bool:
    kafka_url, database_url = env["SCRIBE_KAFKA_URL"], env["SCRIBE_DATABASE_URL"]
    _say("waiting for the worker to drain ...")
    stored, cost = await _usage_in_postgres(database_url, tally.usage_ids, timeout=60)
    click.echo("\n== Scribe demo: run summary ==")
    click.echo(f"{'topic':<22}{'published':>10}{'bad':>6}{'in .dlq':>9}")
    ok = True
    sample_reason = b""
    for spec in INPUT_TOPICS:
        reasons = await _dead_letters(kafka_url, spec, tally.bad_key, tally.bad[spec.name])
        sample_reason = sample_reason or (reasons[0] if reasons else b"")
        ok &= len(reasons) == tally.bad[spec.name]
        click.echo(
            f"{spec.name:<22}{tally.published[spec.name]:>10,}{tally.bad[spec.name]:>6}"
            f"{len(reasons):>9}"
        )
    click.echo(
        f"\nusage ledger: {stored:,} of {len(tally.usage_ids):,} events stored; "
        f"cost {cost} USD (published {tally.usage_cost} USD)"
    )
    ok &= stored == len(tally.usage_ids) and cost == tally.usage_cost
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT user_id, day, model, requests, cost_usd FROM usage_daily "
            "WHERE user_id LIKE 'demo-user-%' ORDER BY cost_usd DESC LIMIT 3"
        )
    finally:
        await conn.close()
    click.echo("top usage_daily rows:")
    for row in rows:
        click.echo(
            f"  {row['user_id']:<14} {row['day']} {row['model']:<18} "
            f"{row['requests']:>5} requests  {row['cost_usd']} USD"
        )
    ok &= await _world_summary(database_url)
    if sample_reason:
        click.echo(f"a dead letter's reason: {sample_reason.decode(errors='replace')}")
    click.echo(
        f"worker: {'running' if worker.alive() else 'NOT RUNNING'}; log at {worker.log_path}"
    )
    return ok and worker.alive()


def run_demo(seconds: float, workdir: Path) -> int:
    settings = Settings.from_env()
    with ExitStack() as stack:
        env = stack.enter_context(_services(settings))
        _say("starting a worker (joining the consumer group takes a few seconds) ...")
        worker = new_worker(env, (workdir / settings.state_dir).resolve() / "demo", "scribe-demo")
        stack.callback(worker.stop)
        worker.start()
        _say(f"worker ready: metrics at {worker.url}/metrics, health at {worker.url}/health")
        _say(f"publishing a mixed load at ~{EVENTS_PER_SECOND} events/s for {seconds:.0f} s ...")
        tally = LoadTally()
        asyncio.run(_load_worlds(env))
        asyncio.run(_publish_load(env["SCRIBE_KAFKA_URL"], seconds, tally))
        ok = asyncio.run(_summarize(env, tally, worker))
        click.echo("demo: " + ("every event accounted for" if ok else "MISMATCH (see above)"))
        return 0 if ok else 1
