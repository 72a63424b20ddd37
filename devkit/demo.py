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
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import click
import httpx
from prometheus_client.parser import text_string_to_metric_families

from devkit.dead_letters import dead_letters_since
from devkit.dead_letters import tally as dead_letter_tally
from devkit.harness import Record, WorkerProcess, new_worker, read_until
from devkit.loadgen.runner import Progress, run_load
from devkit.loadgen.workload import Malformed, Message, Mix, Workload, WorkloadConfig
from devkit.stack import LocalStack
from runtime.metrics import family_specs
from runtime.settings import Settings, kafka_bootstrap_servers
from schemas import decode, encode
from schemas.events import AIRequest, AIResponse, CacheInvalidation, UsageEvent, WorldEvent
from schemas.examples import example
from scribe.dashboard.figures import take_snapshot
from scribe.gateway.access import TokenBook
from scribe.gateway.config import GatewaySettings
from scribe.gateway.server import RunningGateway
from topics.catalog import INPUT_TOPICS, topic_for
from topics.publisher import Publisher

EVENTS_PER_SECOND = 200
BAD_INPUT_SHARE = 0.02
PROGRESS_EVERY_S = 5.0
GATEWAY_EVENTS = 100
DEMO_PREFIX = "demo-"
USAGE_ONLY = Mix(ai_requests=0, world_events=0, world_ticks=0, cache_invalidations=0)
# A small monthly budget for the busiest demo user, so its alerts show up in the summary.
BUDGET_USER, BUDGET_USD = f"{DEMO_PREFIX}user-1", Decimal(6)


@dataclass
class LoadTally:
    """What the demo published, to check against what came out."""

    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    started: datetime = field(default_factory=lambda: datetime.now(UTC))  # dead letters after
    published: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)
    usage_cost: Decimal = Decimal(0)
    usage_ids: set[str] = field(default_factory=set)
    via_gateway: int = 0
    invalidation_targets: int = 0
    ai_request_ids: set[str] = field(default_factory=set)

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
        if isinstance(message, AIRequest):
            self.ai_request_ids.add(message.request_id)
        if isinstance(message, CacheInvalidation):
            self.invalidation_targets += sum(
                map(len, (message.keys, message.patterns, message.tags, message.urls))
            )


def _say(line: str) -> None:
    click.echo(line, err=True)


@contextmanager
def _services(settings: Settings) -> Iterator[dict[str, str]]:
    if settings.kafka_url and settings.database_url and settings.redis_url:
        yield {
            "SCRIBE_KAFKA_URL": settings.kafka_url,
            "SCRIBE_DATABASE_URL": settings.database_url,
            "SCRIBE_REDIS_URL": settings.redis_url,
        } | ({"SCRIBE_CDN_URL": settings.cdn_url} if settings.cdn_url else {})
        return
    _say("starting the embedded stack (Tansu, PostgreSQL, Redis, CDN simulator) ...")
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
    from sinks.postgres.databases import Databases

    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetch(
            "SELECT world_id FROM world_state WHERE world_id = ANY($1::text[]) ORDER BY 1",
            DEMO_WORLDS,
        )
    finally:
        await conn.close()
    async with Databases(database_url, max_size=1) as databases:
        states = [(await current_state(databases, row["world_id"]))[1] for row in stored]
        click.echo(f"\nworlds: {len(states)} ticked, {sum(s.tick for s in states):,} ticks in all")
        if states:
            click.echo("  " + summary(states[0])[0])
        _say("replaying the demo worlds from their stored events ...")
        results = [await replay_world(databases, state.world_id) for state in states]
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


async def _dead_letters_summary(kafka_url: str, tally: LoadTally) -> bool:
    """Every dead letter since the load began, per topic and kind, beside what the load meant
    to be bad; true when the dead letters are exactly the bad messages."""
    meant = sum(tally.bad.values())
    letters = await dead_letters_since(
        kafka_url,
        tally.started,
        enough=lambda found: sum(d.key == tally.bad_key for d in found) >= meant,
    )
    counts = dead_letter_tally(letters)
    click.echo(f"{'topic':<22}{'published':>10}{'bad':>6}{'in .dlq':>9}  by kind")
    ok = True
    for spec in INPUT_TOPICS:
        mine = [d for d in letters if d.topic == spec.name]
        bad_ones = sum(d.key == tally.bad_key for d in mine)
        ok &= bad_ones == tally.bad[spec.name] and len(mine) == bad_ones
        kinds = ", ".join(
            f"{kind} {n}" for (name, kind), n in sorted(counts.items()) if name == spec.name
        )
        click.echo(
            f"{spec.name:<22}{tally.published[spec.name]:>10,}{tally.bad[spec.name]:>6}"
            f"{len(mine):>9}  {kinds or '-'}"
        )
    unexpected = [d for d in letters if d.key != tally.bad_key]
    if unexpected:
        click.echo(
            f"{len(unexpected)} dead letter(s) of messages the demo meant to be valid; the first: "
            f"{unexpected[0].topic} {unexpected[0].kind}: {unexpected[0].reason}"
        )
    elif letters:
        click.echo(f"a dead letter's reason: {letters[0].reason}")
    return ok


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


def _metric_sum(text: str, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def _invalidation_summary(
    env: dict[str, str], tally: LoadTally, worker: WorkerProcess
) -> bool:
    """Invalidation targets received and left after coalescing, purges per sink, and what the
    local CDN simulator recorded; true once at least as many targets were received as the load
    published (the world flow announces its own changes on the same topic)."""
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            text = (await http.get(f"{worker.url}/metrics")).text
            received = _metric_sum(text, "scribe_coalesce_targets_total", stage="received")
            if received >= tally.invalidation_targets or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        emitted = _metric_sum(text, "scribe_coalesce_targets_total", stage="emitted")
        purges = ", ".join(
            f"{sink} {_metric_sum(text, 'scribe_invalidations_total', sink=sink):,.0f}"
            for sink in ("redis", "l1", "cdn.fastly", "cdn.cloudflare")
        )
        ratio = f"{received / emitted:.2f}" if emitted else "n/a"
        click.echo(
            f"invalidations: {received:,.0f} targets received ({tally.invalidation_targets:,} "
            "published by the load, the rest announced by the world flow), "
            f"{emitted:,.0f} after coalescing (ratio {ratio}); purged: {purges}"
        )
        if env.get("SCRIBE_CDN_URL"):
            # Only the local simulator answers this; a real CDN's purges show above.
            answer = await http.get(f"{env['SCRIBE_CDN_URL']}/_sim/stats")
            if answer.status_code == 200:
                click.echo(f"CDN simulator recorded purges: {answer.json()['purges']}")
    return received >= tally.invalidation_targets


async def _summarize(env: dict[str, str], tally: LoadTally, worker: WorkerProcess) -> bool:
    kafka_url, database_url = env["SCRIBE_KAFKA_URL"], env["SCRIBE_DATABASE_URL"]
    _say("waiting for the worker to drain ...")
    stored, cost = await _usage_in_postgres(database_url, tally.usage_ids, timeout=60)
    click.echo("\n== Scribe demo: run summary ==")
    ok = await _dead_letters_summary(kafka_url, tally)
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
    for line in await _budget_and_costs(database_url):
        click.echo(line)
    ok &= await _world_summary(database_url)
    ok &= await _invalidation_summary(env, tally, worker)
    click.echo(await _ai_responses(kafka_url, tally.ai_request_ids))
    click.echo(
        f"worker: {'running' if worker.alive() else 'NOT RUNNING'}; log at {worker.log_path}"
    )
    return ok and worker.alive()


async def _set_budget(database_url: str) -> None:
    from sinks.postgres.budgets import BudgetStore

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        thresholds = Settings.from_env().usage.alert_thresholds_pct
        await BudgetStore(pool).set_budget(BUDGET_USER, BUDGET_USD, thresholds)
    finally:
        await pool.close()


async def _budget_and_costs(database_url: str) -> list[str]:
    from datetime import UTC, datetime

    from agents.usage.report import ReportPolicy, build_report
    from schemas.model_catalog import load_catalog
    from sinks.postgres.budgets import BudgetStore
    from sinks.postgres.costs import load_cost_inputs

    now = datetime.now(UTC)
    month = now.date().replace(day=1)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        alerts = await BudgetStore(pool).alerts(BUDGET_USER, month)
        inputs = await load_cost_inputs(pool, month, None)
    finally:
        await pool.close()
    policy = ReportPolicy.from_settings(Settings.from_env().usage)
    report = build_report(inputs, load_catalog(), policy, now)
    crossed = ", ".join(f"{a.threshold_pct}%" for a in alerts)
    share = (
        "no images"
        if report.free_image_share is None
        else f"free-tier image share {report.free_image_share:.1%}"
    )
    return [
        f"budget alerts for {BUDGET_USER} (budget {BUDGET_USD} USD): {crossed or 'none yet'}",
        f"cost report {month:%Y-%m}: month-to-date {report.total_usd:.6f} USD, projected "
        f"{report.projection.month_end_usd:.6f} USD, {share}, "
        f"{len(report.recommendations)} recommendation(s) (scribe costs report)",
    ]


def run_demo(seconds: float, workdir: Path) -> int:
    settings = Settings.from_env()
    with ExitStack() as stack:
        env = stack.enter_context(_services(settings))
        _say("starting a worker (joining the consumer group takes a few seconds) ...")
        worker = new_worker(env, (workdir / settings.state_dir).resolve() / "demo", "scribe-demo")
        stack.callback(worker.stop)
        worker.start()
        _say(f"worker ready: metrics at {worker.url}/metrics, health at {worker.url}/health")
        asyncio.run(_set_budget(env["SCRIBE_DATABASE_URL"]))
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


async def _ai_responses(kafka_url: str, request_ids: set[str]) -> str:
    """One line: the router's answers to the demo's AI requests, by status, free vs paid."""
    answered: dict[str, AIResponse] = {}

    def keep(record: Record) -> bool:
        if record.value is None:
            return False
        response = decode(record.value, AIResponse)
        if response.request_id in request_ids:
            answered.setdefault(response.request_id, response)
        return False

    deadline = time.monotonic() + 60
    while len(answered) < len(request_ids) and time.monotonic() < deadline:
        await read_until(kafka_url, "ai.responses", done=lambda _: False, match=keep, timeout=3)
    statuses = Counter(r.status.value for r in answered.values())
    free = sum(1 for r in answered.values() if r.free_tier)
    paid = sum(1 for r in answered.values() if r.free_tier is False)
    by_status = ", ".join(f"{n:,} {status}" for status, n in sorted(statuses.items())) or "none"
    return (
        f"ai.responses: {len(answered):,} of {len(request_ids):,} requests answered "
        f"({by_status}); served free {free:,}, paid {paid:,}"
    )
