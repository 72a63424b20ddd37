"""`make demo`: the pipeline on the embedded stack (or SCRIBE_*_URL) under a mixed load.

Starts what it needs, runs one worker, publishes valid events to every input topic with a
sprinkle of bad ones, prints progress, then a summary of what came out; stops what it started.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

import asyncpg
import click
import httpx
from prometheus_client.parser import text_string_to_metric_families

from schemas import encode
from schemas.events import UsageEvent, WorldEvent
from schemas.examples import example
from scribe.dashboard.figures import take_snapshot
from scribe.gateway.access import TokenBook
from scribe.gateway.config import GatewaySettings
from scribe.gateway.server import RunningGateway
from scribe.loadgen.runner import Progress, run_load
from scribe.loadgen.workload import Malformed, Message, Mix, Workload, WorkloadConfig
from scribe.metrics import family_specs
from scribe.settings import Settings, kafka_bootstrap_servers
from scribe.stack import LocalStack
from scribe.workers import WorkerProcess, new_worker, read_until
from topics.catalog import INPUT_TOPICS, TopicSpec, topic_for
from topics.publisher import Publisher

EVENTS_PER_SECOND = 200
BAD_INPUT_SHARE = 0.02
PROGRESS_EVERY_S = 5.0
GATEWAY_EVENTS = 100
DEMO_PREFIX = "demo-"
USAGE_ONLY = Mix(ai_requests=0, world_events=0, world_ticks=0, cache_invalidations=0)


@dataclass
class LoadTally:
    """What the demo published, to check against what came out."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    published: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)
    usage_cost: Decimal = Decimal(0)
    usage_ids: set[str] = field(default_factory=set)
    via_gateway: int = 0

    @property
    def bad_key(self) -> bytes:
        # Bad messages carry this key, so a rerun on a stack still running counts only its own.
        return f"{DEMO_PREFIX}bad-{self.run_id}".encode()

    def count(self, message: Message) -> None:
        if isinstance(message, Malformed):
            self.bad[message.topic] += 1
            return
        self.published[topic_for(message).name] += 1
        if isinstance(message, UsageEvent):
            self.usage_ids.add(message.event_id)
            self.usage_cost += message.cost_usd or Decimal(0)


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


def _workload(tally: LoadTally) -> Workload:
    return Workload(
        WorkloadConfig(
            seed=7,
            run_id=tally.run_id,
            prefix=DEMO_PREFIX,
            users=20,
            worlds=5,
            mix=Mix(malformed=BAD_INPUT_SHARE),
        )
    )


DEMO_WORLDS = [f"{DEMO_PREFIX}world-{n}" for n in range(1, 6)]  # the workload's five worlds


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
    async with Publisher(kafka_bootstrap_servers(kafka_url)) as publisher:
        report = await run_load(
            publisher,
            _workload(tally),
            EVENTS_PER_SECOND,
            seconds,
            on_sent=tally.count,
            progress=Progress(every_s=PROGRESS_EVERY_S),
        )
    if report.failed:
        raise click.ClickException(
            f"{report.failed} event(s) not acknowledged: {report.first_error}"
        )
    _say(f"  achieved {report.achieved_rate:,.0f} events/s ({report.ratio:.0%} of target)")


async def _post_through_gateway(env: dict[str, str], tally: LoadTally) -> None:
    """Usage events over HTTP: the gateway validates, publishes and answers 202 with the ids;
    a request without a token is refused. They join the ledger check like the rest."""
    token = secrets.token_urlsafe(24)
    settings = GatewaySettings(TokenBook.parse(f"demo:{token}:usage.events"), port=0)
    resolved = Settings(
        kafka_url=env["SCRIBE_KAFKA_URL"],
        database_url=env["SCRIBE_DATABASE_URL"],
        redis_url=env["SCRIBE_REDIS_URL"],
    ).require()
    config = replace(_workload(tally).config, seed=8, run_id=f"{tally.run_id}-gw", mix=USAGE_ONLY)
    workload = Workload(config)
    events = [workload.next() for _ in range(GATEWAY_EVENTS)]
    body = b"\n".join(encode(e) for e in events if not isinstance(e, Malformed))
    async with (
        RunningGateway(settings, resolved) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=30) as client,
    ):
        headers = {"Content-Type": "application/x-ndjson"}
        refused = await client.post("/v1/events/usage.events", content=body, headers=headers)
        accepted = await client.post(
            "/v1/events/usage.events",
            content=body,
            headers=headers | {"Authorization": f"Bearer {token}"},
        )
    if refused.status_code != 401 or accepted.status_code != 202:
        raise click.ClickException(
            f"gateway: expected 401 then 202, got {refused.status_code} then "
            f"{accepted.status_code}: {accepted.text}"
        )
    for event in events:
        tally.count(event)
    tally.via_gateway = len(events)
    _say(
        f"  gateway at {gateway.url}: no token -> 401; {len(events)} usage events as NDJSON -> 202"
    )


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


def _print_metric_families(worker: WorkerProcess) -> None:
    """What /metrics shows right after the load: each family's total, or that nothing feeds it
    yet (the flows that will are still to come)."""
    text = httpx.get(f"{worker.url}/metrics", timeout=5).text
    snapshot = take_snapshot(text_string_to_metric_families(text), time.time())
    click.echo("\n== /metrics at the end of the load: each family's total ==")
    for spec in (s for s in family_specs() if s.served_by == "worker"):
        series = snapshot.series(spec.activity_sample)
        value = f"{sum(series.values()):,.6g}" if series else "no samples yet"
        click.echo(f"  {spec.activity_sample:<42}{value:>16}")


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
    click.echo(f"({tally.via_gateway} of the usage events came through the HTTP gateway)")
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
        _say(f"watch it live: {worker.url}/dashboard")
        tally = LoadTally()
        asyncio.run(_load_worlds(env))
        asyncio.run(_publish_load(env["SCRIBE_KAFKA_URL"], seconds, tally))
        _print_metric_families(worker)
        _say("posting usage events through the HTTP ingest gateway ...")
        asyncio.run(_post_through_gateway(env, tally))
        ok = asyncio.run(_summarize(env, tally, worker))
        click.echo("demo: " + ("every event accounted for" if ok else "MISMATCH (see above)"))
        return 0 if ok else 1
