"""The other flows' own benchmark scripts (router, world, invalidation), run once per run with
modest sizes, each on a fresh embedded stack of its own; their figures are read from what they
print or write to bench/results/. A flow whose script is not on this branch yet is reported as
not available, with the reason."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import psutil

from bench.cases import PEAK_RSS, Case, Context, Metric
from devkit.harness import SERVICE_VARS
from devkit.stack import StackError
from devkit.stack.apache_kafka.distribution import find_java

BENCH_DIR = Path(__file__).parent.parent
RESULTS = BENCH_DIR / "results"
SCRIPT_TIMEOUT_S = 600.0


class WorkerPeakRss:
    """The largest resident set of any `scribe worker` process started under `pid`."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self.root = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                children = self.root.children(recursive=True)
            except psutil.Error:
                return
            for child in children:
                try:
                    if child.cmdline()[-3:] == ["-m", "scribe", "worker"]:
                        self.peak = max(self.peak, child.memory_info().rss)
                except psutil.Error:
                    continue
            self._stop.wait(self.every)

    def __enter__(self) -> WorkerPeakRss:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()


class FlowScript(Case):
    """`python bench/<script> <args>`; `parse(stdout, new result files)` gives the figures."""

    script: str
    issue: str
    args: tuple[str, ...] = ()
    results_prefix: str | None = None

    @property
    def group(self) -> str:  # type: ignore[override]
        return self.name

    def unavailable(self, ctx: Context) -> str | None:
        if not (BENCH_DIR / self.script).exists():
            return f"not available yet: bench/{self.script} ({self.issue}) is not merged"
        return None

    def parse(self, stdout: str, results: list[dict[str, Any]]) -> dict[str, float]:
        raise NotImplementedError

    def measure(self, ctx: Context) -> dict[str, float]:
        started = time.time()
        # Its own embedded stack (started and stopped by the script): a new worker's Faust group
        # reads every topic from the start, so it must not meet earlier runs' traffic.
        env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
        log = ctx.state_dir / f"{self.name}.log"
        process = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / self.script), *self.args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        lines: list[str] = []
        with WorkerPeakRss(process.pid) as rss:
            reader = threading.Thread(target=_collect, args=(process, lines, ctx.say), daemon=True)
            reader.start()
            try:
                process.wait(SCRIPT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.terminate()
                process.wait(30)
            reader.join(10)
        stdout = "".join(lines)
        log.write_text(stdout)
        if process.returncode != 0:
            raise RuntimeError(f"bench/{self.script} exited {process.returncode}; see {log}")
        found = []
        if self.results_prefix:
            for path in sorted(RESULTS.glob(f"{self.results_prefix}-*.json")):
                if path.stat().st_mtime >= started:
                    found.append(json.loads(path.read_text()))
        figures = self.parse(stdout, found)
        if rss.peak:
            figures[PEAK_RSS.name] = rss.peak / 2**20
        return figures


def _collect(process: subprocess.Popen[str], lines: list[str], say: Callable[[str], None]) -> None:
    """Keep the script's output, and show its progress lines."""
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        say(f"  | {line.rstrip()}")


def _number(pattern: str, text: str, what: str) -> float:
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"{what} not found in the script's output (pattern {pattern!r})")
    return float(match.group(1).replace(",", ""))


RATE_PATHS = {"kafka": "Kafka", "api": "the HTTP API"}
# 1,000/s is over what one worker executes here: its queue grows for the whole phase and the
# script then runs past its timeout, so `make bench` takes 200/s; run 1,000/s by hand.
ROUTER_RATES = (200,)


class OnApacheKafka(FlowScript):
    """Mixed in before a Tansu case: the same script on a one-broker Apache Kafka it starts for
    itself, in the Tansu case's group, so each run measures both under the same noise."""

    tansu_case: ClassVar[str]

    @property
    def group(self) -> str:  # type: ignore[override]
        return self.tansu_case

    def unavailable(self, ctx: Context) -> str | None:
        return _needs_java() or super().unavailable(ctx)


class RouterBench(FlowScript):
    """Decide throughput of one worker (burst of background requests) and the latency the
    pipeline adds over a direct call to the provider simulator, p50/p99: one request at a time,
    and p99 at a steady 200 requests/s through Kafka and the HTTP API."""

    name = "ours.router"
    script = "router.py"
    issue = "issue 4, router"
    # A burst of more than two of decide's batches (2,000), so the rate spans whole batches.
    args: tuple[str, ...] = (
        "--decide", "5000", "--latency", "200", "--backlog", "0",
        "--rates", ",".join(map(str, ROUTER_RATES)), "--seconds", "5", "--api",
    )  # fmt: skip
    metrics = (
        Metric("decide_per_s", "requests/s"),
        Metric("added_latency_p50_ms", "ms"),
        Metric("added_latency_p99_ms", "ms"),
        *(
            Metric(f"added_p99_{path}_{rate}_per_s_ms", "ms")
            for rate in ROUTER_RATES
            for path in RATE_PATHS
        ),
        # The baseline printed beside each rate: the same requests' bare delivery, one hop.
        *(Metric(f"bare_hop_p99_{rate}_per_s_ms", "ms") for rate in ROUTER_RATES),
        PEAK_RSS,
    )

    def parse(self, stdout: str, results: list[dict[str, Any]]) -> dict[str, float]:
        added = r"latency added by the pipeline[^:]*: p50 (-?[\d.]+) ms"
        bare = {
            f"bare_hop_p99_{rate}_per_s_ms": _number(
                rf"latency at {rate:,}/s through Kafka .*\n\s*baseline, one bare Kafka hop "
                r"[^:]*: p50 -?[\d.]+ ms, p99 (-?[\d.]+) ms",
                stdout,
                f"the bare hop's p99 at {rate}/s",
            )
            for rate in ROUTER_RATES
        }
        figures = {
            "decide_per_s": _number(
                r"decisions in [\d.]+ s = ([\d,]+) requests/s", stdout, "decide"
            ),
            "added_latency_p50_ms": _number(added, stdout, "added latency p50"),
            "added_latency_p99_ms": _number(
                r"latency added by the pipeline[^:]*: p50 -?[\d.]+ ms, p99 (-?[\d.]+) ms",
                stdout,
                "added latency p99",
            ),
        }
        for rate in ROUTER_RATES:
            for path, said in RATE_PATHS.items():
                figures[f"added_p99_{path}_{rate}_per_s_ms"] = _number(
                    rf"latency at {rate:,}/s through {re.escape(said)} \(achieved [\d,]+/s\): "
                    r"added p50 -?[\d.]+ ms, p99 (-?[\d.]+) ms",
                    stdout,
                    f"added latency p99 at {rate}/s through {said}",
                )
        return figures | bare


class RouterApacheBench(OnApacheKafka, RouterBench):
    """The same on a one-broker Apache Kafka the script starts for itself."""

    tansu_case = RouterBench.name

    name = "ours.router.apache"
    issue = "issue 18, the router on Apache Kafka"
    args = (*RouterBench.args, "--broker", "apache")


def _decide_apart(broker: str) -> tuple[str, ...]:
    return (
        "--layout", "decide-apart", "--decide", "30000", "--latency", "0", "--backlog", "0",
        "--broker", broker,
    )  # fmt: skip


class RouterDecideBench(FlowScript):
    """Decide in a worker of its own (`SCRIBE_WORKER_FLOWS=router-decide`; the lanes and the
    other flows in a second one): a 30,000-request burst's decisions per second, and the
    decide worker's CPU per decision, the steadier figure on a shared machine."""

    name = "ours.router_decide"
    script = "router.py"
    issue = "issue 18, decide per worker"
    args = _decide_apart("tansu")
    metrics = (
        Metric("decide_per_s", "requests/s"),
        Metric("decide_cpu_ms_per_decision", "ms"),
        Metric("decisions_per_cpu_second", "requests/s"),
        PEAK_RSS,
    )

    def parse(self, stdout: str, results: list[dict[str, Any]]) -> dict[str, float]:
        return {
            "decide_per_s": _number(
                r"decisions in [\d.]+ s = ([\d,]+) requests/s", stdout, "decide"
            ),
            "decide_cpu_ms_per_decision": _number(
                r"the worker's CPU ([\d.]+) ms per decision", stdout, "CPU per decision"
            ),
            "decisions_per_cpu_second": _number(
                r"= ([\d,]+) decisions per CPU-second", stdout, "decisions per CPU-second"
            ),
        }


class RouterDecideApacheBench(OnApacheKafka, RouterDecideBench):
    tansu_case = RouterDecideBench.name
    name = "ours.router_decide.apache"
    args = _decide_apart("apache")


def _needs_java() -> str | None:
    try:
        find_java()
    except StackError as error:
        return f"needs Apache Kafka: {error}"
    return None


SERVERS_CPU = (Metric("postgres_cpu_ms_per_tick", "ms"), Metric("broker_cpu_ms_per_tick", "ms"))


class WorldBench(FlowScript):
    """World ticks stored per second by one worker with 200 active worlds at 1 Hz."""

    name = "ours.world"
    script = "world_ticks.py"
    issue = "issue 6, world"
    results_prefix = "world_ticks"
    args: tuple[str, ...] = ("--worlds", "200", "--seconds", "10", "--events-per-second", "50")
    metrics: tuple[Metric, ...] = (
        Metric("ticks_per_s", "ticks/s"),
        Metric("tick_lag_p99_s", "s"),
        Metric("worker_cpu_ms_per_tick", "ms"),
        # The worker's CPU per tick over the pure step's, measured in the same run.
        Metric("cpu_per_tick_ratio_to_pure_step", "x"),
        # The worker's CPU with no world loaded, and the ratio above it.
        Metric("worker_idle_cpu_utilization", "cores"),
        Metric("cpu_per_tick_above_idle_ratio_to_pure_step", "x"),
        # PostgreSQL's and the broker's, over the same window (when they run on this machine).
        *SERVERS_CPU,
        # Every core's time over the window that was not idle: a full machine shows here.
        Metric("machine_busy_share", "share"),
        PEAK_RSS,
    )

    def parse(self, stdout: str, results: list[dict[str, Any]]) -> dict[str, float]:
        if not results:
            raise ValueError("bench/world_ticks.py wrote no results file")
        last = results[-1]
        return {
            metric.name: last[metric.name]
            for metric in self.metrics
            if metric is not PEAK_RSS and (metric not in SERVERS_CPU or metric.name in last)
        }


class WorldAtScaleBench(WorldBench):
    """Issue 19's world goal: 5,000 active worlds at 1 Hz on one worker, tick lag p99 under
    1 s and CPU per tick at most 3x the pure step."""

    name = "ours.world_5000"
    issue = "issue 19, 5,000 worlds"
    args: tuple[str, ...] = ("--worlds", "5000", "--seconds", "30", "--events-per-second", "100")


class WorldAtScaleApacheBench(OnApacheKafka, WorldAtScaleBench):
    """The same on a one-broker Apache Kafka the script starts for itself."""

    tansu_case = WorldAtScaleBench.name

    name = "ours.world_5000.apache"
    args = (*WorldAtScaleBench.args, "--broker", "apache")


class WorldAtScaleApartBench(WorldAtScaleApacheBench):
    """The same with the world flow alone in the measured worker and the other flows (the
    invalidations' delivery among them) in a second one, as docs/capacity.md deploys them;
    the second worker's CPU per tick beside."""

    name = "ours.world_5000.apache.apart"
    args = (*WorldAtScaleApacheBench.args, "--apart")
    metrics: tuple[Metric, ...] = (
        *WorldAtScaleApacheBench.metrics,
        Metric("other_worker_cpu_ms_per_tick", "ms"),
    )


class WorldOverhead(FlowScript):
    """The world flow's own CPU per tick (owner, log rows, checkpoints, the PostgreSQL write,
    invalidations built and encoded) against the pure step, in one process, no Kafka."""

    name = "ours.world_overhead"
    script = "world_overhead.py"
    issue = "world speed"
    results_prefix = "world_overhead"
    args = ("--worlds", "1000", "--rounds", "20")
    metrics = (
        Metric("flow_cpu_ms_per_tick", "ms"),
        Metric("pure_step_cpu_ms_per_tick", "ms"),
        Metric("flow_cpu_ratio_to_pure_step", "x"),
        Metric("write_wall_p50_s", "s"),
    )

    def parse(self, stdout: str, results: list[dict[str, Any]]) -> dict[str, float]:
        if not results:
            raise ValueError("bench/world_overhead.py wrote no results file")
        return {metric.name: results[-1][metric.name] for metric in self.metrics}


class InvalidationBench(FlowScript):
    """Publish -> Redis-deleted latency at 5,000 invalidations/s, p50/p99, beside its baseline:
    publish -> delivered to a plain aiokafka consumer, p99, on the same messages; and the
    coalescing ratio of a 10,000-invalidation burst (repeats clustered, published at once)."""

    name = "ours.invalidation"
    script = "invalidation_latency.py"
    issue = "issue 7, invalidation"
    args = ("--rates", "5000", "--seconds", "5", "--broker", "tansu")
    results_prefix = "invalidation_latency"
    metrics = (
        Metric("achieved_per_s", "invalidations/s"),
        Metric("deleted_latency_p50_ms", "ms"),
        Metric("deleted_latency_p99_ms", "ms"),
        Metric("kafka_delivered_p99_ms", "ms"),
        Metric("burst_coalescing_ratio", "x"),
        # The run's noise: how late the script's own event loop woke (added to both p99s).
        Metric("bench_loop_lag_p99_ms", "ms"),
        PEAK_RSS,
    )

    def parse(self, stdout: str, results: list[dict[str, Any]]) -> dict[str, float]:
        if not results or not results[-1].get("rates"):
            raise ValueError("bench/invalidation_latency.py wrote no rate results")
        rate = results[-1]["rates"][0]
        latency = rate["publish_to_redis_deleted"]
        figures = {
            "achieved_per_s": rate["achieved_rate_per_s"],
            "deleted_latency_p50_ms": latency["p50_ms"],
            "deleted_latency_p99_ms": latency["p99_ms"],
            "kafka_delivered_p99_ms": rate["baseline_publish_to_kafka_delivered"]["p99_ms"],
        }
        if "bench_loop_lag_p99_ms" in rate:
            figures["bench_loop_lag_p99_ms"] = rate["bench_loop_lag_p99_ms"]
        bursts = results[-1].get("bursts") or []
        if bursts and bursts[0].get("coalescing_ratio") is not None:
            figures["burst_coalescing_ratio"] = bursts[0]["coalescing_ratio"]
        return figures


class InvalidationApacheBench(OnApacheKafka, InvalidationBench):
    """The same on a one-broker Apache Kafka the script starts for itself (issue 19: p99
    under 50 ms at 5,000/s there, beside the Tansu figure)."""

    tansu_case = InvalidationBench.name

    name = "ours.invalidation.apache"
    issue = "issue 19, invalidation on Apache Kafka"
    args = ("--rates", "5000", "--seconds", "5", "--broker", "apache")


class FaustAgentLatency(Case):
    """Publish -> Faust agent latency at 5 messages/s, with Faust's fixed 1500 ms fetch wait
    and with the embedded stack's short wait (`bench/faust_fetch_wait.py`), side by side
    (`bench/cases/faust_agent_latency.py`)."""

    name = "faust.agent_latency"
    group = name
    count = 40
    metrics = (
        Metric("faust_wait_p50_ms", "ms"),
        Metric("faust_wait_p99_ms", "ms"),
        Metric("short_wait_p50_ms", "ms"),
        Metric("short_wait_p99_ms", "ms"),
    )

    def measure(self, ctx: Context) -> dict[str, float]:
        figures: dict[str, float] = {}
        for wait, label in (("faust", "faust_wait"), ("short", "short_wait")):
            result = ctx.state_dir / f"latency-{label}-{time.monotonic_ns()}.result"
            subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).parent / "faust_agent_latency.py"),
                    wait,
                    str(self.count),
                    str(result),
                ],
                env={**os.environ, **ctx.env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                timeout=120,
                check=False,
            )
            if not result.exists():
                raise RuntimeError(f"faust_agent_latency.py {wait} wrote no result")
            seen, p50, p99 = result.read_text().split()
            if int(seen) < self.count:
                raise RuntimeError(f"the agent saw {seen} of {self.count} messages ({wait})")
            figures |= {f"{label}_p50_ms": float(p50), f"{label}_p99_ms": float(p99)}
        return figures


def flow_cases() -> list[Case]:
    return [
        RouterBench(),
        RouterApacheBench(),
        RouterDecideBench(),
        RouterDecideApacheBench(),
        WorldBench(),
        WorldAtScaleBench(),
        WorldAtScaleApacheBench(),
        WorldAtScaleApartBench(),
        WorldOverhead(),
        InvalidationBench(),
        InvalidationApacheBench(),
        FaustAgentLatency(),
    ]
