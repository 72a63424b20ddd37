"""The metric families follow Prometheus conventions and keep their labels low-cardinality."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from runtime.metrics import (
    NO_AGENT,
    current_agent_name,
    family_specs,
    observe_all,
    observe_end_to_end,
)

# Values that grow with users, worlds or traffic never become labels.
UNBOUNDED_LABELS = {"user_id", "user", "world_id", "world", "request_id", "event_id", "id", "key"}
UNIT_SUFFIXES = (
    "_seconds",
    "_usd",
    "_messages",
    "_requests",
    "_ratio",
    "_size",
    "_state",
    "_status",
    "_loads",
)


def test_names_carry_the_prefix_and_a_unit_or_kind() -> None:
    specs = family_specs()
    assert len({s.name for s in specs}) == len(specs)
    for spec in specs:
        assert spec.name.startswith("scribe_"), spec.name
        if spec.kind != "counter":
            assert spec.name.endswith(UNIT_SUFFIXES) or spec.name == "scribe_worlds_active", (
                spec.name
            )
        assert "_total" not in spec.name  # the client adds it to a counter's sample


def test_labels_stay_low_cardinality() -> None:
    for spec in family_specs():
        assert not set(spec.labels) & UNBOUNDED_LABELS, (spec.name, spec.labels)


def test_every_family_the_issue_lists_is_defined() -> None:
    names = {s.name for s in family_specs()}
    assert {
        "scribe_messages_in",
        "scribe_messages_out",
        "scribe_dead_letters",
        "scribe_processing_seconds",
        "scribe_end_to_end_seconds",
        "scribe_consumer_lag_messages",
        "scribe_provider_calls",
        "scribe_provider_call_seconds",
        "scribe_free_tier_requests",
        "scribe_provider_key_quota_used_ratio",
        "scribe_breaker_state",
        "scribe_cost_usd",
        "scribe_cost_today_usd",
        "scribe_cost_month_to_date_usd",
        "scribe_invalidations",
        "scribe_coalesce_targets",
        "scribe_sink_batch_size",
        "scribe_sink_retries",
        "scribe_sink_errors",
        "scribe_world_ticks",
        "scribe_world_tick_lag_seconds",
    } <= names


def test_messages_are_counted_per_topic_and_agent() -> None:
    by_name = {s.name: s for s in family_specs()}
    for family in ("scribe_messages_in", "scribe_messages_out", "scribe_dead_letters"):
        assert {"topic", "agent"} <= set(by_name[family].labels)


def test_outside_an_agent_the_agent_label_says_so() -> None:
    assert current_agent_name() == NO_AGENT


def _e2e_count(agent: str, sink: str) -> float:
    value = REGISTRY.get_sample_value(
        "scribe_end_to_end_seconds_count", {"agent": agent, "sink": sink}
    )
    return value or 0.0


def test_end_to_end_latency_is_observed_per_event() -> None:
    committed = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
    before = _e2e_count("test-agent", "test-sink")
    sum_before = REGISTRY.get_sample_value(
        "scribe_end_to_end_seconds_sum", {"agent": "test-agent", "sink": "test-sink"}
    )
    times = [committed - timedelta(milliseconds=ms) for ms in (10, 20, 30)]
    # A clock a little ahead at the producer does not make a negative latency.
    times.append(committed + timedelta(seconds=1))
    observe_end_to_end("test-agent", "test-sink", times, committed_at=committed)
    assert _e2e_count("test-agent", "test-sink") - before == 4
    total = REGISTRY.get_sample_value(
        "scribe_end_to_end_seconds_sum", {"agent": "test-agent", "sink": "test-sink"}
    )
    assert total is not None
    assert total - (sum_before or 0.0) == pytest.approx(0.06)


def test_observe_all_records_what_one_observe_per_amount_records() -> None:
    registry = CollectorRegistry()
    buckets = (0.005, 0.01, 0.1, 1.0)
    one_by_one = Histogram("one_by_one", "each amount observed", registry=registry, buckets=buckets)
    together = Histogram("together", "all amounts at once", registry=registry, buckets=buckets)
    # On a bound, between bounds, zero, and past the last finite bound.
    amounts = [0.0, 0.005, 0.0051, 0.01, 0.05, 0.1, 0.5, 1.0, 1.5, 30.0, 0.003, 0.003]
    for amount in amounts:
        one_by_one.observe(amount)
    observe_all(together, amounts)

    def samples(name: str) -> dict[tuple[str, str], float]:
        return {
            (s.name.removeprefix(name), s.labels.get("le", "")): s.value
            for metric in registry.collect()
            if metric.name == name
            for s in metric.samples
            if not s.name.endswith("_created")
        }

    assert samples("together") == pytest.approx(samples("one_by_one"))
    assert samples("together")[("_bucket", "0.005")] == 4
    assert samples("together")[("_count", "")] == len(amounts)
