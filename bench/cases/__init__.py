"""The benchmark cases. A case measures its metrics once per `measure` call; the runner calls
every case of a group once per run, in the order of `all_cases()`, so they share the machine's
noise."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str


EVENTS_PER_S = Metric("events_per_s", "events/s")
PEAK_RSS = Metric("peak_rss_mb", "MB")
DEDUPE_SIZE = Metric("dedupe_guard_mb", "MB")


@dataclass
class Context:
    env: dict[str, str]  # SCRIBE_*_URL of the servers under test
    state_dir: Path
    events: int
    runs: int
    broker: str
    say: Callable[[str], None]
    shared: dict[str, Any] = field(default_factory=dict)  # what cases prepare once for all


class Case(ABC):
    name: str
    metrics: tuple[Metric, ...] = (EVENTS_PER_S,)
    # Cases of one group run side by side, run after run; groups run one after the other, so
    # a group's workers never meet another group's traffic on the broker.
    group: str = "usage"

    def unavailable(self, ctx: Context) -> str | None:
        """Why this case cannot run here (printed, never a number), or None."""
        return None

    @abstractmethod
    def measure(self, ctx: Context) -> dict[str, float]:
        """One run: metric name -> value."""


@dataclass(frozen=True)
class Ratio:
    """ours / baseline, taken within each run."""

    name: str
    ours: tuple[str, str]  # (case, metric)
    baseline: tuple[str, str]

    @property
    def metric(self) -> str:
        return self.ours[1]


def all_cases() -> list[Case]:
    from bench.cases.flows import RouterBench, flow_cases
    from bench.cases.tracing import Traced
    from bench.cases.usage import UsageToPostgres, usage_cases

    return [*usage_cases(), Traced(UsageToPostgres()), *flow_cases(), Traced(RouterBench())]


def all_ratios() -> list[Ratio]:
    ours = ("ours.usage_to_postgres", EVENTS_PER_S.name)
    return [
        Ratio("ratio.ours_vs_aiokafka_consume", ours, ("limit.aiokafka_consume", "events_per_s")),
        Ratio("ratio.ours_vs_faust_table", ours, ("peer.faust_table", "events_per_s")),
        Ratio("ratio.ours_vs_quixstreams", ours, ("peer.quixstreams", "events_per_s")),
        # What tracing every request costs (bench/cases/tracing.py).
        Ratio(
            "ratio.usage_traced_vs_untraced",
            ("ours.usage_to_postgres.traced", "events_per_s"),
            ours,
        ),
        *(
            Ratio(
                "ratio.router_traced_vs_untraced",
                ("ours.router.traced", metric),
                ("ours.router", metric),
            )
            for metric in ("decide_per_s", "added_latency_p50_ms", "added_latency_p99_ms")
        ),
        # The invalidation flow on Apache Kafka over the same on Tansu (bench/cases/flows.py).
        *(
            Ratio(
                "ratio.invalidation_apache_vs_tansu",
                ("ours.invalidation.apache", metric),
                ("ours.invalidation", metric),
            )
            for metric in ("deleted_latency_p99_ms", "kafka_delivered_p99_ms")
        ),
    ]
