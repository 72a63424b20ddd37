"""Under `scribe loadgen`'s load, every metric the alert rules, the Grafana panels and the live
dashboard read has samples on /metrics (the gateway's on the gateway's /metrics), and consumer
lag is reported for every consumer group the worker runs, as the broker lists them.

The cache client's families are fed by the processes that read through a `CacheClient`: app
code, not the worker (its cache warming only primes Redis, it never reads). This test process
plays such an app on the same stack and its own exposition text is checked for them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import promql_parser
import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.invalidation.warming_flow import WARMING
from cache import CacheClient
from cache.layout import LEASE_FIELD
from devkit.harness import WorkerProcess
from runtime.metrics import GATEWAY_PREFIX, family_specs
from runtime.settings import kafka_bootstrap_servers
from tests.deploy.monitoring import alert_rules, dashboard_targets, figure_families, selectors

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

Labels = frozenset[tuple[str, str]]
LAG = "scribe_consumer_lag_messages"
FEED_TIMEOUT_S = 120.0
CACHE_CLIENT_SAMPLES = frozenset(
    name
    for spec in family_specs()
    if spec.served_by == "cache client"
    for name in spec.sample_names
)


@dataclass(frozen=True)
class Read:
    """A metric some consumer reads: a sample name (or a histogram's family name) and the
    label values it asks for with `=`."""

    name: str
    labels: Labels
    reader: str

    def met_by(self, samples: dict[str, list[Labels]]) -> bool:
        for name in (self.name, f"{self.name}_bucket"):
            if any(self.labels <= labels for labels in samples.get(name, [])):
                return True
        return False

    def __str__(self) -> str:
        wanted = ", ".join(f"{k}={v!r}" for k, v in sorted(self.labels))
        return (
            f"{self.name}{{{wanted}}} (read by {self.reader})"
            if wanted
            else (f"{self.name} (read by {self.reader})")
        )


def reads() -> list[Read]:
    found = []
    expressions = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    expressions += [(f"Grafana panel {title!r}", expr) for title, expr in dashboard_targets()]
    for reader, expr in expressions:
        for selector in selectors(expr):
            equal = frozenset(
                (m.name, m.value)
                for m in selector.matchers.matchers
                if m.op == promql_parser.MatchOp.Equal and m.name != "__name__"
            )
            found.append(Read(selector.name, equal, reader))
    found += [Read(name, frozenset(), "the /dashboard figures") for name in figure_families()]
    return found


async def scrape(url: str) -> dict[str, list[Labels]]:
    async with httpx.AsyncClient(timeout=10) as client:
        return samples_of((await client.get(f"{url}/metrics")).text)


def samples_of(text: str) -> dict[str, list[Labels]]:
    samples: dict[str, list[Labels]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(frozenset(sample.labels.items()))
    return samples


async def read_like_an_app(redis_url: str) -> dict[str, list[Labels]]:
    """The exposition text of this process after it read through two cache clients as app
    processes do: a miss, an L1 hit, a Redis hit, a lease wait that times out, and a loaded
    value whose write-back the lease refuses because the key was invalidated meanwhile."""
    prefix = f"coverage-{uuid.uuid4().hex[:8]}"
    redis = aioredis.from_url(redis_url)
    busy, invalidated = f"{prefix}:busy", f"{prefix}:invalidated"

    async def load() -> str:
        return "v"

    async def load_while_invalidated() -> str:
        await redis.delete(invalidated)
        return "v"

    try:
        await redis.hset(busy, LEASE_FIELD, "another-process")
        await redis.pexpire(busy, 60_000)
        async with (
            CacheClient(redis_url, name="coverage", lease_wait=0.05) as app,
            CacheClient(redis_url, name="coverage") as other,
        ):
            for client in (app, app, other):
                await client.get(f"{prefix}:k", load)
            await app.get(busy, load)
            await app.get(invalidated, load_while_invalidated)
            done = (app.stats, other.stats)
    finally:
        await redis.aclose()
    assert [(s.l1_hits, s.redis_hits, s.misses) for s in done] == [(1, 0, 3), (0, 1, 0)]
    assert (done[0].lease_wait_timeouts, done[0].fills_refused) == (1, 1)
    return samples_of(generate_latest(REGISTRY).decode())


async def until_empty(
    what: str, missing: Callable[[], Awaitable[list[str]]], timeout: float = FEED_TIMEOUT_S
) -> None:
    """Ask `missing` until it answers nothing; fail with its last answer after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        left = await missing()
        if not left:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} after {timeout:.0f} s:\n  " + "\n  ".join(sorted(left)))
        await asyncio.sleep(2)


def test_the_reads_are_found_in_all_three_places() -> None:
    """The extraction itself: alerts, Grafana and figures each name the router's families."""
    by_reader = {r.reader.split(" ")[0] for r in reads() if "provider" in r.name}
    assert by_reader == {"alert", "Grafana", "the"}
    cache_readers = {r.reader.split(" ")[0] for r in reads() if r.name in CACHE_CLIENT_SAMPLES}
    assert cache_readers == {"alert", "Grafana", "the"}
    assert any(r.labels == {("agent", "invalidation")} for r in reads())


async def test_every_metric_read_by_alerts_grafana_and_the_dashboard_has_samples(
    loaded_worker: WorkerProcess, gateway: str, metrics_stack: dict[str, str]
) -> None:
    wanted = reads()
    app_samples = await read_like_an_app(metrics_stack["SCRIBE_REDIS_URL"])

    async def missing() -> list[str]:
        worker = await scrape(loaded_worker.url)
        gateway_samples = await scrape(gateway)

        def served(read: Read) -> dict[str, list[Labels]]:
            if read.name.startswith(GATEWAY_PREFIX):
                return gateway_samples
            return app_samples if read.name in CACHE_CLIENT_SAMPLES else worker

        return [str(read) for read in wanted if not read.met_by(served(read))]

    await until_empty("read but never fed", missing)


async def consumer_groups_of(kafka_url: str, app_id: str) -> set[str]:
    """The broker's consumer groups of this worker's app: `<app_id>.<flow>`, and any named
    `<app_id>` or `<app_id>-...` (none now: a worker that joined one would show up here)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap_servers(kafka_url))
    await admin.start()
    try:
        listed = await admin.list_consumer_groups()
    finally:
        await admin.close()
    names = {group[0] for group in listed}
    return {n for n in names if n == app_id or n.startswith((f"{app_id}-", f"{app_id}."))}


async def test_consumer_lag_is_reported_for_every_consumer_group_of_the_worker(
    loaded_worker: WorkerProcess, metrics_stack: dict[str, str]
) -> None:
    groups = await consumer_groups_of(metrics_stack["SCRIBE_KAFKA_URL"], loaded_worker.app_id)
    # The router's decide, settle, held and three execution lanes, usage, world, invalidation
    # and cache warming: a broker that lists fewer has not seen the flows join.
    assert len(groups) >= 10, sorted(groups)
    assert WARMING.group_of(loaded_worker.app_id) in groups, sorted(groups)

    async def unreported() -> list[str]:
        samples = await scrape(loaded_worker.url)
        reported = {dict(labels).get("group") for labels in samples.get(LAG, [])}
        return [f"{group}: no {LAG} sample" for group in groups - reported]

    await until_empty("consumer groups without lag", unreported)
