"""Router benchmarks on the embedded stack with the provider simulator answering at once.

    .venv/bin/python bench/router.py [--decide 5000] [--latency 300] [--backlog 10000]
        [--rates 200,1000 --seconds 10] [--api] [--broker tansu|apache]
        [--layout one|router-only|decide-apart]

- decide: requests/s the decide stage of one worker turns into lane records (from the lane
  records' timestamps, first to last), for a burst of normal requests published up front, and
  that worker's CPU per decision. With `--layout one` they are executed meanwhile in the same
  worker; with `--layout decide-apart` the measured worker hosts only decide and settle.
- latency: requests sent one at a time at a modest rate; publish -> response as seen by a
  consumer of ai.responses, beside a direct HTTP call to the same simulator (the baseline: what
  a caller pays without the router). The difference is the latency the pipeline adds; LiteLLM
  publishes its router's added latency as median 2-12 ms, p99 13-43 ms (its docs' load tests).
- rates: requests sent at a steady rate (open loop: each at its planned moment, whatever the
  answers do) for `--seconds`; added latency p50/p99 per rate, through Kafka (publish ->
  ai.responses) and, with `--api`, through the gateway's OpenAI-compatible HTTP API (request ->
  HTTP answer), each minus the direct call's median.
- backlog: with N background requests held back (outside the off-peak window), how long urgent
  requests take to be answered; and with N background requests published right before each
  urgent one (decide sends them to the held lane in the same batches it decides the urgent ones).

Each phase prints a progress line; the stack and worker are started and stopped by the script.
`--broker apache` runs them on a one-broker Apache Kafka of the script's own (the jars from
Maven Central, as `scripts/kafka.sh` fetches them) instead of the embedded broker.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.brokers import BROKERS, stack_on
from bench.processes import (
    MachineCpu,
    ThreadWindow,
    listening_pid,
    server_pids,
    thread_time_text,
    tree_cpu_seconds,
)
from devkit.harness import ArrivalWatch, WorkerProcess, gateway_process
from devkit.stack.processes import free_port
from runtime.http import outbound_client
from runtime.settings import kafka_bootstrap_servers
from schemas.events import AIRequest
from schemas.examples import example
from topics.publisher import Publisher

LITELLM = "LiteLLM router overhead (published): median 2-12 ms, p99 13-43 ms"
API_TOKEN = f"bench-{uuid.uuid4().hex}"


def say(line: str) -> None:
    print(line, flush=True)


@contextmanager
def timing() -> Iterator[None]:
    """No garbage collection in this process while it timestamps requests: a full collection
    of its heap stalls every timestamp taken meanwhile, 49-153 ms in the invalidation bench."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def describe(values: list[float]) -> str:
    return (
        f"p50 {pct(values, 50):.1f} ms, p99 {pct(values, 99):.1f} ms, "
        f"max {max(values):.1f} ms (n={len(values)})"
    )


# Which flows each worker hosts (`SCRIBE_WORKER_FLOWS`; empty: all of them). The first worker
# is the one measured: decide's rate and CPU are its own.
LAYOUTS = {
    "one": ("",),
    "router-only": ("router", "usage,world,invalidation"),
    "decide-apart": ("router-decide", "router-lanes,usage,world,invalidation"),
}


def lanes_worker(layout: str) -> int:
    """Which of the layout's workers hosts the lanes (and with them express and the held
    lane)."""
    for index, flows in enumerate(LAYOUTS[layout]):
        if not flows or {"router", "router-lanes"} & set(flows.split(",")):
            return index
    raise ValueError(f"layout {layout!r} hosts no lanes")


@contextmanager
def running_workers(
    root: Path, extra: dict[str, str], broker: str = "tansu", layout: str = "one"
) -> Iterator[tuple[dict[str, str], list[WorkerProcess]]]:
    """The workers the router phases run on, as `LAYOUTS[layout]` spreads the flows."""
    with stack_on(broker, root, report=say) as env:
        sim = env["SCRIBE_PROVIDER_URL"]
        now = datetime.now(UTC) + timedelta(hours=3)
        worker_env = {
            **env,
            # Low and background are held (an off-peak window three hours away).
            "SCRIBE_ROUTER_OFFPEAK": f"{now:%H:%M}-{now + timedelta(hours=1):%H:%M}",
            **extra,
        }
        workers = [
            WorkerProcess(
                env=worker_env | ({"SCRIBE_WORKER_FLOWS": flows} if flows else {}),
                state_dir=root / "worker",
                app_id="scribe-bench",
                web_port=free_port(),
            )
            for flows in LAYOUTS[layout]
        ]
        try:
            say(f"starting {len(workers)} worker(s): {' | '.join(LAYOUTS[layout])} ...")
            for process in workers:
                process.start()
                process.wait_consuming()
            httpx.post(f"{sim}/_sim/config", json={"delay_ms": 0}).raise_for_status()
            yield env, workers
        finally:
            for process in reversed(workers):
                process.stop()


def request_id_of(value: bytes) -> str | None:
    start = value.find(b'"request_id":"')
    if start < 0:
        return None
    start += 14
    return value[start : value.find(b'"', start)].decode()


def responses(kafka_url: str) -> ArrivalWatch:
    return ArrivalWatch(kafka_url, "ai.responses", request_id_of)


async def metric_lines(worker_url: str, prefix: str) -> list[str]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{worker_url}/metrics")).text
    return [line for line in text.splitlines() if line.startswith(prefix)]


def text_request(priority: str, **fields: Any) -> AIRequest:
    tag = uuid.uuid4().hex[:8]
    return example(
        AIRequest,
        user_id=f"bench-{tag[:3]}",
        kind="text",
        priority=priority,
        prompt=f"Say hello [tag:{tag}]",
        **fields,
    )


def decide_lines(decisions: int, span_s: float, cpu_per_decision_s: float) -> list[str]:
    return [
        f"decide: {decisions:,} decisions in {span_s:.2f} s = "
        f"{decisions / span_s:,.0f} requests/s (one worker)",
        f"decide: the worker's CPU {cpu_per_decision_s * 1e3:.3f} ms per decision = "
        f"{1 / cpu_per_decision_s:,.0f} decisions per CPU-second",
    ]


async def bench_decide(env: dict[str, str], count: int, worker: WorkerProcess) -> None:
    # The worker's own CPU per decision is steadier than the rate on a shared machine: the rate
    # also waits for the broker, the load generator and whatever else runs.
    cpu_before = worker.cpu_seconds()
    say(f"decide: publishing {count:,} normal requests ...")
    requests = [text_request("normal") for _ in range(count)]
    async with Publisher(kafka_bootstrap_servers(env["SCRIBE_KAFKA_URL"])) as publisher:
        await publisher.publish_many(requests)
    ids = {r.request_id.encode() for r in requests}
    consumer = AIOKafkaConsumer(
        "ai.lane.normal",
        bootstrap_servers=kafka_bootstrap_servers(env["SCRIBE_KAFKA_URL"]),
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    stamps: list[int] = []
    try:
        deadline = time.monotonic() + 300
        next_line = time.monotonic() + 5
        while len(stamps) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    start = record.value.find(b'"request_id":"') + 14
                    if record.value[start : record.value.find(b'"', start)] in ids:
                        stamps.append(record.timestamp)
            if time.monotonic() > next_line:
                next_line += 5
                say(f"  decided {len(stamps):,}/{count:,}")
    finally:
        await consumer.stop()
    cpu_per_decision = (worker.cpu_seconds() - cpu_before) / len(stamps)
    span_s = (max(stamps) - min(stamps)) / 1000
    for line in decide_lines(len(stamps), span_s, cpu_per_decision):
        say(line)
    for line in await metric_lines(env["WORKER_URL"], "scribe_processing_seconds_"):
        if 'agent="router"' in line and ("_sum" in line or "_count" in line):
            say(f"  {line}")


async def bench_latency(env: dict[str, str], count: int) -> None:
    direct = await direct_calls(env["SCRIBE_PROVIDER_URL"], count)
    say(f"latency: direct call to the simulator: {describe(direct)}")
    routed: list[float] = []
    async with (
        Publisher(kafka_bootstrap_servers(env["SCRIBE_KAFKA_URL"]), linger_ms=0) as publisher,
        responses(env["SCRIBE_KAFKA_URL"]) as watch,
    ):
        with timing():
            for n in range(count):
                request = text_request("urgent")
                started = time.monotonic()
                await publisher.publish(request)
                routed.append((await watch.arrival(request.request_id) - started) * 1000)
                await asyncio.sleep(0.02)
                if n and n % 100 == 0:
                    say(f"  {n}/{count}")
    say(f"latency: publish -> response through the router: {describe(routed)}")
    added = [r - pct(direct, 50) for r in routed]
    say(f"latency added by the pipeline (minus the direct median): {describe(added)}")
    say(
        f"  ratio to LiteLLM's published router overhead: p50 {pct(added, 50) / 12:.1f}x its "
        f"worst median (12 ms), p99 {pct(added, 99) / 43:.1f}x its worst p99 (43 ms)"
    )
    say(f"  {LITELLM}")


async def direct_calls(sim: str, count: int) -> list[float]:
    """Milliseconds of `count` direct calls to the simulator, one after another: the baseline."""
    direct: list[float] = []
    async with httpx.AsyncClient(base_url=sim) as client:
        for n in range(count):
            started = time.monotonic()
            response = await client.post(
                "/v1beta/models/gemini-2.5-flash:generateContent",
                json={"contents": [{"parts": [{"text": f"direct {n}"}]}]},
                headers={"x-goog-api-key": "bench"},
            )
            response.raise_for_status()
            direct.append((time.monotonic() - started) * 1000)
    return direct


async def paced(
    rate: float, seconds: float, send: Callable[[int], Coroutine[Any, Any, None]]
) -> float:
    """Start `send(n)` at n / rate seconds, whatever earlier sends are doing; returns the rate
    achieved once every send finished."""
    count = max(1, round(rate * seconds))
    started = time.monotonic()
    tasks = []
    for n in range(count):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(n)))
    await asyncio.gather(*tasks)
    return count / max(time.monotonic() - started, 1e-9)


async def loop_lateness(worker_url: str) -> dict[float, float]:
    """The worker's event-loop probe so far: wake-ups at most `le` seconds late, by `le`."""
    counts = {}
    for line in await metric_lines(worker_url, "scribe_event_loop_lag_seconds_bucket"):
        bound = line.split('le="', 1)[1].split('"', 1)[0]
        counts[float(bound)] = float(line.rsplit(" ", 1)[1])
    return counts


async def cpu_seconds(worker_url: str) -> float:
    """The CPU (user and system) the worker has used so far, from its /metrics."""
    for line in await metric_lines(worker_url, "process_cpu_seconds_total"):
        return float(line.rsplit(" ", 1)[1])
    return math.nan


async def expressed(worker_url: str) -> float:
    """Requests the worker ran as soon as decided (agents/router/express.py), so far."""
    lines = await metric_lines(worker_url, "scribe_router_expressed_total")
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def cpu_line(name: str, cpu_s: float, requests: int, span_s: float) -> str:
    """The worker's CPU over a phase, per request and as a share of one core: the figure the
    machine's other load changes least."""
    if not requests or math.isnan(cpu_s):
        return f"  {name}: CPU not measured"
    return (
        f"  {name}: CPU {cpu_s / requests * 1000:.2f} ms per request "
        f"({cpu_s / span_s * 100:.0f} % of a core)"
    )


def worker_pid(worker_url: str) -> int | None:
    """The worker serving `worker_url` on this machine: the process listening on its port."""
    return listening_pid(urlsplit(worker_url).port or 0)


def loop_thread_line(name: str, shares: tuple[float, float, float] | None) -> str:
    if shares is None:
        return f"  {name}: its event-loop thread's times not read (no schedstat here)"
    return f"  {name}'s event-loop thread: {thread_time_text(shares)}"


class PhaseLoad:
    """How busy the whole machine was over a phase, and the cores the broker and this script
    took beside the worker: a worker short of CPU on a full machine falls behind whatever its
    code does."""

    def __init__(self, env: dict[str, str]) -> None:
        self.broker = server_pids(env).get("broker")
        self.machine = MachineCpu.now()
        self.broker_cpu = self._broker_cpu()
        self.own_cpu = time.process_time()
        self.started = time.monotonic()

    def _broker_cpu(self) -> float:
        return tree_cpu_seconds([self.broker]) if self.broker is not None else math.nan

    def line(self) -> str:
        span = max(time.monotonic() - self.started, 1e-9)
        busy = MachineCpu.now().busy_share_since(self.machine)
        broker = (self._broker_cpu() - self.broker_cpu) / span
        own = (time.process_time() - self.own_cpu) / span
        cores = os.cpu_count() or 1
        broker_text = "" if math.isnan(broker) else f"the broker {broker:.2f} cores, "
        return (
            f"  the machine: {busy * 100:.0f} % of its {cores} cores busy; "
            f"{broker_text}this script {own:.2f} cores"
        )


async def redis_counts(url: str) -> dict[str, float]:
    """Redis's CPU seconds so far, and its calls per command: a phase's difference shows what
    each request cost Redis and how many scripts it ran."""
    client = aioredis.from_url(url)
    try:
        cpu = await client.info("cpu")
        commands = await client.info("commandstats")
    finally:
        await client.aclose()
    counts = {name.removeprefix("cmdstat_"): float(s["calls"]) for name, s in commands.items()}
    return counts | {"cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])}


def redis_line(before: dict[str, float], after: dict[str, float], requests: int) -> str:
    """Per request over a phase: Redis's CPU, and the scripts it ran (decide's two per batch,
    and the key pool's takes, which go together when calls overlap)."""
    per = max(1, requests)
    cpu_us = (after["cpu_s"] - before["cpu_s"]) / per * 1e6
    scripts = (after.get("evalsha", 0.0) - before.get("evalsha", 0.0)) / per
    return f"  redis: {cpu_us:.0f} us of its CPU and {scripts:.2f} scripts per request"


def lateness_line(name: str, before: dict[float, float], after: dict[float, float]) -> str:
    """How late the worker's loop ran between two readings: the bucket bound its p99 is under,
    and the wake-ups late by more than 10 ms (the time its flows' work held every other)."""
    grown = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = grown.get(math.inf, 0.0)
    if not total:
        return f"  {name}: event loop not probed (no scribe_event_loop_lag_seconds)"
    p99 = next(bound for bound, count in grown.items() if count >= 0.99 * total)
    late = total - grown.get(0.01, 0.0)
    return (
        f"  {name}: event loop late p99 <= {p99 * 1000:g} ms; "
        f"{late:.0f} of {total:.0f} wake-ups over 10 ms late"
    )


async def bench_rate_kafka(env: dict[str, str], rate: float, seconds: float, base: float) -> None:
    sent: dict[str, float] = {}
    kafka = env["SCRIBE_KAFKA_URL"]
    workers = {"decide's worker": env["WORKER_URL"], "the lanes' worker": env["LANES_URL"]}
    if env["WORKER_URL"] == env["LANES_URL"]:
        workers = {"the worker": env["WORKER_URL"]}
    loops = {name: await loop_lateness(url) for name, url in workers.items()}
    cpu = {name: await cpu_seconds(url) for name, url in workers.items()}
    threads = {name: ThreadWindow(worker_pid(url)) for name, url in workers.items()}
    express_before = await expressed(env["LANES_URL"])
    redis_before = await redis_counts(env["SCRIBE_REDIS_URL"])
    load = PhaseLoad(env)
    started = time.monotonic()
    async with (
        Publisher(kafka_bootstrap_servers(kafka), linger_ms=0) as publisher,
        responses(kafka) as watch,
        # The baseline beside it: the same requests' delivery to a plain consumer, one hop of
        # the router's two, on the same broker and machine at the same moment.
        ArrivalWatch(kafka, "ai.requests", request_id_of) as delivered,
    ):

        async def send(_: int) -> None:
            request = text_request("urgent")
            sent[request.request_id] = time.monotonic()
            await publisher.publish(request)

        with timing():
            achieved = await paced(rate, seconds, send)
            routed = [(await watch.arrival(rid, 120) - at) * 1000 for rid, at in sent.items()]
            bare = [(await delivered.arrival(rid, 120) - at) * 1000 for rid, at in sent.items()]
            span_s = time.monotonic() - started
            cpu = {name: await cpu_seconds(url) - cpu[name] for name, url in workers.items()}
            loop_shares = {name: thread.shares() for name, thread in threads.items()}
            machine = load.line()
    redis_after = await redis_counts(env["SCRIBE_REDIS_URL"])
    added = [r - base for r in routed]
    say(
        f"latency at {rate:,.0f}/s through Kafka (achieved {achieved:,.0f}/s): added "
        f"{describe(added)}"
    )
    say(f"  baseline, one bare Kafka hop (publish -> a plain consumer): {describe(bare)}")
    for name, url in workers.items():
        say(lateness_line(name, loops[name], await loop_lateness(url)))
        say(cpu_line(name, cpu[name], len(sent), span_s))
        say(loop_thread_line(name, loop_shares[name]))
    say(machine)
    say(redis_line(redis_before, redis_after, len(sent)))
    ran_at_once = await expressed(env["LANES_URL"]) - express_before
    say(f"  run as soon as decided (express): {ran_at_once:,.0f} of {len(sent):,} requests")


async def bench_rate_api(
    env: dict[str, str], api_url: str, rate: float, seconds: float, base: float
) -> None:
    added: list[float] = []
    overhead: list[float] = []
    failed: list[str] = []
    # httpx's own pool costs a few ms of CPU per call with hundreds of connections open, and
    # made this client, not the gateway, the bottleneck (48 of 200 calls/s); runtime.http's
    # aiohttp pool does not.
    async with outbound_client(1000, base_url=api_url, timeout=60) as client:

        async def send(n: int) -> None:
            started = time.monotonic()
            response = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "auto",
                    "messages": [{"role": "user", "content": f"Say hello [tag:api{n}]"}],
                },
                headers={"Authorization": f"Bearer {API_TOKEN}", "x-scribe-priority": "urgent"},
            )
            if response.status_code != 200:
                failed.append(f"{response.status_code} {response.text[:200]}")
                return
            added.append((time.monotonic() - started) * 1000 - base)
            overhead.append(float(response.headers["x-scribe-overhead-ms"]))

        load = PhaseLoad(env)
        with timing():
            achieved = await paced(rate, seconds, send)
        machine = load.line()
    if failed:
        say(f"  {len(failed)} API calls failed, e.g. {failed[0]}")
    say(
        f"latency at {rate:,.0f}/s through the HTTP API (achieved {achieved:,.0f}/s): added "
        f"{describe(added)}; x-scribe-overhead-ms {describe(overhead)}"
    )
    say(machine)


# Unmeasured traffic before the rates: a worker fresh from its start opens its connections to
# the provider, Redis and the broker as the load asks for them, and the first seconds of the
# first rate measured that rather than the pace (p99 105 ms after a warm start, 323 ms cold).
WARM_UP_S = 3.0


async def warm_up(env: dict[str, str], rate: float, seconds: float) -> None:
    say(f"warming up: {rate:,.0f}/s for {seconds:.0f} s, not measured ...")
    kafka = env["SCRIBE_KAFKA_URL"]
    ids: list[str] = []
    async with (
        Publisher(kafka_bootstrap_servers(kafka), linger_ms=0) as publisher,
        responses(kafka) as watch,
    ):

        async def send(_: int) -> None:
            request = text_request("urgent")
            ids.append(request.request_id)
            await publisher.publish(request)

        await paced(rate, seconds, send)
        for request_id in ids:
            await watch.arrival(request_id, 120)


async def bench_rates(
    env: dict[str, str], rates: list[float], seconds: float, api_url: str | None
) -> None:
    direct = await direct_calls(env["SCRIBE_PROVIDER_URL"], 200)
    base = pct(direct, 50)
    say(f"rates: direct call to the simulator: {describe(direct)}")
    await warm_up(env, rates[0], WARM_UP_S)
    for rate in rates:
        await bench_rate_kafka(env, rate, seconds, base)
        if api_url is not None:
            await bench_rate_api(env, api_url, rate, seconds, base)


async def bench_backlog(env: dict[str, str], backlog: int, rounds: int = 10) -> None:
    kafka = env["SCRIBE_KAFKA_URL"]
    async with (
        Publisher(kafka_bootstrap_servers(kafka), linger_ms=0) as publisher,
        responses(kafka) as watch,
    ):
        before = await wait_held(env, 0)
        say(f"backlog: publishing {backlog:,} background requests ...")
        await publisher.publish_many([text_request("background") for _ in range(backlog)])
        held = await wait_held(env, before + backlog)
        say(f"backlog: the held lane holds {held:,}")
        queued: list[float] = []
        for _ in range(rounds):
            request = text_request("urgent")
            started = time.monotonic()
            await publisher.publish(request)
            queued.append((await watch.arrival(request.request_id) - started) * 1000)
        say(f"urgent behind {backlog:,} held background requests: {describe(queued)}")
        ahead: list[float] = []
        with_publishing: list[float] = []
        for n in range(3):
            batch = [text_request("background") for _ in range(backlog)]
            request = text_request("urgent")
            started = time.monotonic()
            await publisher.publish_many([*batch, request])
            published = time.monotonic()
            answered = await watch.arrival(request.request_id, 300)
            ahead.append((answered - published) * 1000)
            with_publishing.append((answered - started) * 1000)
            say(f"  round {n + 1}: {ahead[-1]:.0f} ms ({with_publishing[-1]:.0f} ms)")
        say(
            f"urgent published right behind {backlog:,} background ones, from its publish "
            f"acknowledged: {describe(ahead)}; from the first of the {backlog:,} sent: "
            f"{describe(with_publishing)}"
        )


async def wait_held(env: dict[str, str], at_least: int, timeout: float = 300) -> int:
    worker_url = env["LANES_URL"]
    deadline = time.monotonic() + timeout
    held = 0
    next_line = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in await metric_lines(worker_url, 'scribe_router_lane_held_requests{lane="held"}'):
            held = int(float(line.rsplit(" ", 1)[1]))
        if held >= at_least:
            return held
        if time.monotonic() > next_line:
            next_line += 5
            say(f"  held {held:,}/{at_least:,}")
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the held lane holds {held}, expected {at_least}")


async def rates_phase(
    env: dict[str, str], rates: list[float], seconds: float, api_root: Path | None
) -> None:
    if api_root is None:
        await bench_rates(env, rates, seconds, None)
        return
    gateway_env = {
        **env,
        "SCRIBE_GATEWAY_API_TOKENS": f"bench-api:{API_TOKEN}:premium",
        # The bench measures latency, not the per-user limit.
        "SCRIBE_GATEWAY_API_RATE": "100000",
        "SCRIBE_GATEWAY_API_BURST": "100000",
    }
    with gateway_process(gateway_env, api_root / "gateway.log") as url:
        await bench_rates(env, rates, seconds, url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decide", type=int, default=5000, help="burst size (0 skips)")
    parser.add_argument("--latency", type=int, default=300, help="requests (0 skips)")
    parser.add_argument("--backlog", type=int, default=10000, help="held requests (0 skips)")
    parser.add_argument("--rates", default="", help="requests/s, comma-separated (none skips)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each rate runs")
    parser.add_argument("--api", action="store_true", help="the rates through the HTTP API too")
    parser.add_argument("--broker", choices=BROKERS, default="tansu")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="one",
        help="one worker for every flow; router-only: one for the router and one for the "
        "rest; decide-apart: one for decide and settle, one for the lanes and the rest",
    )
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    with (
        tempfile.TemporaryDirectory(prefix="router-bench-") as tmp,
        running_workers(Path(tmp), {}, args.broker, args.layout) as (stack_env, workers),
    ):
        # Decide's figures come from the first worker, the lanes' from the one hosting them.
        lanes = workers[lanes_worker(args.layout)]
        env = {**stack_env, "WORKER_URL": workers[0].url, "LANES_URL": lanes.url}
        say(f"machine load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        if args.decide:
            asyncio.run(bench_decide(env, args.decide, workers[0]))
        if args.latency:
            asyncio.run(bench_latency(env, args.latency))
        if rates:
            asyncio.run(rates_phase(env, rates, args.seconds, Path(tmp) if args.api else None))
        if args.backlog:
            asyncio.run(bench_backlog(env, args.backlog))
        say(f"machine load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
