"""The dashboard's figures from registry samples: rates, percentiles, lag, cost, and panels that
nothing feeds staying empty."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scribe.dashboard.figures import (
    Snapshot,
    build_frame,
    histogram_quantile,
    increase,
    latency_rows,
    project_month_end,
    take_snapshot,
)

NOW = datetime(2026, 11, 16, 12, 0, tzinfo=UTC)


class Registry:
    """A private registry holding the pipeline's family names, so each test starts empty."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_in = Counter("scribe_messages_in", "", ["topic", "agent"], registry=r)
        self.messages_out = Counter("scribe_messages_out", "", ["topic", "agent"], registry=r)
        self.dead = Counter("scribe_dead_letters", "", ["topic", "agent", "kind"], registry=r)
        self.processing = Histogram(
            "scribe_processing_seconds", "", ["agent"], buckets=(0.01, 0.1, 1), registry=r
        )
        self.e2e = Histogram(
            "scribe_end_to_end_seconds", "", ["agent", "sink"], buckets=(0.1, 1), registry=r
        )
        self.lag = Gauge(
            "scribe_consumer_lag_messages", "", ["group", "topic", "partition"], registry=r
        )
        self.today = Gauge("scribe_cost_today_usd", "", ["service", "model"], registry=r)
        self.mtd = Gauge("scribe_cost_month_to_date_usd", "", ["service", "model"], registry=r)
        self.routes = Counter("scribe_routing_decisions", "", ["lane", "kind", "route"], registry=r)
        self.breaker = Gauge("scribe_breaker_state", "", ["provider", "model"], registry=r)
        self.ticks = Counter("scribe_world_ticks", "", ["source"], registry=r)
        self.invalidations = Counter("scribe_invalidations", "", ["sink", "kind"], registry=r)
        self.coalesce = Counter("scribe_coalesce_targets", "", ["stage"], registry=r)
        self.cache_reads = Counter("scribe_cache_reads", "", ["cache", "layer"], registry=r)
        self.unrelated = Counter("other_things", "", registry=r)

    def snapshot(self, at: float) -> Snapshot:
        return take_snapshot(self.registry.collect(), at)


@pytest.fixture
def reg() -> Registry:
    return Registry()


def _frame(reg: Registry, change: Callable[[], None], seconds: float = 5.0) -> dict:  # type: ignore[type-arg]
    earlier = reg.snapshot(1000.0)
    change()
    return build_frame(reg.snapshot(1000.0 + seconds), earlier, NOW)


def test_histogram_quantile_interpolates_inside_the_bucket_as_promql_does() -> None:
    buckets = [(0.1, 10.0), (0.2, 30.0), (0.4, 40.0), (float("inf"), 40.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)  # rank 20: halfway 0.1-0.2
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.9, buckets) == pytest.approx(0.32)  # rank 36: 6/10 of 0.2-0.4
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.04)  # first bucket from 0


def test_histogram_quantile_in_the_inf_bucket_answers_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.99, [(1.0, 5.0), (float("inf"), 10.0)]) == 1.0


def test_histogram_quantile_without_observations_is_none() -> None:
    assert histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None
    assert histogram_quantile(0.5, []) is None


def test_increase_treats_a_counter_that_went_down_as_reset() -> None:
    earlier = Snapshot(0, {"c_total": {(("a", "x"),): 50.0, (("a", "y"),): 5.0}})
    current = Snapshot(10, {"c_total": {(("a", "x"),): 70.0, (("a", "y"),): 2.0}})
    assert increase(current, earlier, "c_total") == {(("a", "x"),): 20.0, (("a", "y"),): 2.0}


def test_snapshot_keeps_only_the_pipeline_and_process_families(reg: Registry) -> None:
    reg.unrelated.inc()
    reg.messages_in.labels("t", "a").inc()
    snapshot = reg.snapshot(1.0)
    assert snapshot.has("scribe_messages_in_total")
    assert not snapshot.has("other_things_total")


def test_throughput_rates_per_topic_over_the_window(reg: Registry) -> None:
    reg.messages_in.labels("usage.events", "usage").inc(100)

    def load() -> None:
        reg.messages_in.labels("usage.events", "usage").inc(50)
        reg.messages_in.labels("cache.invalidations", "invalidation").inc(10)
        reg.dead.labels("usage.events", "usage", "json").inc(5)
        reg.messages_out.labels("usage.events.dlq", "usage").inc(5)

    flow = _frame(reg, load)["throughput"]
    rows = {r["topic"]: r for r in flow["rows"]}
    assert set(rows) == {"usage.events", "cache.invalidations"}  # the .dlq output is the DLQ column
    assert rows["usage.events"]["in_per_s"] == pytest.approx(10.0)
    assert rows["usage.events"]["in_total"] == 150
    assert rows["usage.events"]["dlq_per_s"] == pytest.approx(1.0)
    assert rows["cache.invalidations"]["in_per_s"] == pytest.approx(2.0)
    assert flow["in_per_s"] == pytest.approx(12.0)
    assert flow["dlq_total"] == 5


def test_latency_percentiles_cover_only_the_window(reg: Registry) -> None:
    for _ in range(100):
        reg.processing.labels("usage").observe(0.5)  # before the window: not in the figures

    def load() -> None:
        for _ in range(10):
            reg.processing.labels("usage").observe(0.005)

    rows = _frame(reg, load)["latency"]["processing"]
    (usage,) = rows
    assert usage["agent"] == "usage"
    assert usage["count"] == 10
    assert usage["per_s"] == pytest.approx(2.0)
    assert usage["p99"] <= 0.01
    assert usage["mean"] == pytest.approx(0.005)


def test_latency_row_of_an_idle_window_has_no_percentiles(reg: Registry) -> None:
    reg.e2e.labels("invalidation", "redis").observe(0.05)
    snap = reg.snapshot(10.0)
    (row,) = latency_rows(snap, snap, "scribe_end_to_end_seconds", ["agent", "sink"]) or []
    assert row["count"] == 0
    assert row["p95"] is None and row["mean"] is None


def test_consumer_lag_by_group_topic_and_partition(reg: Registry) -> None:
    def sampled() -> None:
        reg.lag.labels("app-usage", "usage.events", "0").set(7)
        reg.lag.labels("app-usage", "usage.events", "1").set(3)
        reg.lag.labels("app-world", "world.ticks", "0").set(0)
        reg.lag.labels("app", "world.ticks", "0").set(2)

    lag = _frame(reg, sampled)["lag"]
    assert lag["total"] == 12
    assert lag["by_topic"] == {"usage.events": 10, "world.ticks": 2}
    assert lag["by_group"] == {"app-usage": 10, "app-world": 0, "app": 2}
    assert lag["partitions"][1] == {
        "group": "app-usage",
        "topic": "usage.events",
        "partition": 0,
        "lag": 7,
    }


def test_cost_today_month_to_date_and_projection(reg: Registry) -> None:
    def priced() -> None:
        reg.today.labels("gemini", "gemini-2.5-flash").set(2.0)
        reg.mtd.labels("gemini", "gemini-2.5-flash").set(15.5)
        reg.mtd.labels("openrouter", "meta-llama/llama-3.3-70b-instruct:free").set(0.0)

    cost = _frame(reg, priced)["cost"]
    rows = {(r["service"], r["model"]): r for r in cost["rows"]}
    assert rows["openrouter", "meta-llama/llama-3.3-70b-instruct:free"]["today"] == 0.0
    flash = rows["gemini", "gemini-2.5-flash"]
    assert flash["today"] == 2.0
    assert flash["month_to_date"] == 15.5
    # 15.5 days of November elapsed at noon on the 16th: 15.5 USD -> 30 USD for 30 days.
    assert flash["projected"] == pytest.approx(30.0)
    assert cost["month_to_date"] == 15.5


def test_projection_assumes_at_least_one_day_of_history() -> None:
    one_hour_in = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    assert project_month_end(1.0, one_hour_in) == pytest.approx(31.0)
    assert project_month_end(0.0, NOW) == 0.0


def test_panels_nothing_feeds_are_empty_not_zero(reg: Registry) -> None:
    frame = _frame(reg, lambda: reg.messages_in.labels("usage.events", "usage").inc())
    for panel in ("lag", "latency", "sinks", "cost", "routing", "breakers", "world", "cache"):
        assert frame[panel] is None, panel
    assert frame["invalidation"] is None
    assert frame["throughput"] is not None


def test_routing_mix_breakers_and_world_once_fed(reg: Registry) -> None:
    def routed() -> None:
        reg.routes.labels("urgent", "text", "paid").inc(1)
        reg.routes.labels("normal", "image", "free").inc(6)
        reg.routes.labels("deferred", "image", "free").inc(3)
        reg.breaker.labels("openrouter", "m").set(2)
        reg.breaker.labels("gemini", "g").set(0)
        reg.ticks.labels("timer").inc(50)

    frame = _frame(reg, routed)
    assert frame["routing"]["free_share"] == pytest.approx(0.9)
    assert frame["routing"]["by_lane"] == {"urgent": 1, "normal": 6, "deferred": 3}
    assert {b["provider"]: b["state"] for b in frame["breakers"]} == {
        "openrouter": "open",
        "gemini": "closed",
    }
    assert frame["world"]["ticks_per_s"] == pytest.approx(10.0)


def test_invalidation_coalescing_ratio_over_the_window_and_since_start(reg: Registry) -> None:
    reg.coalesce.labels("received").inc(10)
    reg.coalesce.labels("emitted").inc(10)

    def burst() -> None:
        reg.coalesce.labels("received").inc(100)
        reg.coalesce.labels("emitted").inc(10)
        reg.invalidations.labels("redis", "key").inc(10)
        reg.e2e.labels("invalidation", "redis").observe(0.02)
        reg.e2e.labels("usage", "postgres.usage").observe(0.5)

    inv = _frame(reg, burst)["invalidation"]
    assert inv["coalescing"]["window"] == pytest.approx(0.9)
    assert inv["coalescing"]["total"] == pytest.approx(1 - 20 / 110)
    assert [row["sink"] for row in inv["latency"]] == ["redis"]  # only the invalidation agent
    assert inv["per_s"] == {"redis": pytest.approx(2.0)}


def test_cache_hit_ratio_per_cache_over_the_window_and_since_start(reg: Registry) -> None:
    reg.cache_reads.labels("worlds", "l1").inc(10)
    reg.cache_reads.labels("worlds", "loader").inc(10)

    def reads() -> None:
        reg.cache_reads.labels("worlds", "l1").inc(30)
        reg.cache_reads.labels("worlds", "redis").inc(10)
        reg.cache_reads.labels("worlds", "loader").inc(10)
        reg.cache_reads.labels("sessions", "loader").inc(5)

    cache = _frame(reg, reads)["cache"]
    rows = {row["cache"]: row for row in cache["rows"]}
    assert rows["worlds"]["hit_ratio"] == pytest.approx(40 / 50)
    assert rows["worlds"]["hit_ratio_total"] == pytest.approx(50 / 70)
    assert rows["worlds"]["reads_per_s"] == pytest.approx(10.0)
    assert rows["worlds"]["reads"] == {"l1": 40, "redis": 10, "loader": 20}
    assert rows["sessions"]["hit_ratio"] == 0.0
    assert rows["sessions"]["reads"] == {"l1": 0, "redis": 0, "loader": 5}
    assert cache["hit_ratio"] == pytest.approx(40 / 55)
    assert cache["hit_ratio_total"] == pytest.approx(50 / 75)


def test_cache_hit_ratio_of_an_idle_window_is_none(reg: Registry) -> None:
    reg.cache_reads.labels("worlds", "l1").inc(3)
    cache = _frame(reg, lambda: None)["cache"]
    assert cache["hit_ratio"] is None
    assert cache["hit_ratio_total"] == 1.0


def test_chart_point_keeps_a_few_numbers_per_frame(reg: Registry) -> None:
    def load() -> None:
        reg.messages_in.labels("usage.events", "usage").inc(25)
        reg.processing.labels("usage").observe(0.05)
        reg.lag.labels("app-usage", "usage.events", "0").set(4)

    point = _frame(reg, load)["point"]
    assert point["t"] == 1_005_000
    assert point["in"] == {"usage.events": pytest.approx(5.0)}
    assert point["lag"] == 4
    assert set(point["p95"]) == {"usage"}
