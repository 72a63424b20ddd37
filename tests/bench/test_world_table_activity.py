"""The world bench's account of `world_state` over its window, from PostgreSQL's counts before
and after it, and what it waits for before the window."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.samples import Sample

from bench.world_ticks import (
    collector_pauses,
    invalidation_progress,
    invalidation_worker,
    loop_thread_shares,
    runs_the_invalidation_flow,
    wait_totals,
    window_means,
    world_state_activity,
)
from devkit.harness import WorkerProcess

BEFORE = {"n_tup_upd": 1000, "n_tup_hot_upd": 400, "n_dead_tup": 50, "vacuums": 2, "bytes": 2**20}


def test_the_window_s_updates_their_hot_share_and_the_table_s_growth() -> None:
    after = {"n_tup_upd": 11000, "n_tup_hot_upd": 2400, "n_dead_tup": 7000, "vacuums": 3}
    activity = world_state_activity(BEFORE, after | {"bytes": 3 * 2**20})
    assert activity == {
        "world_state_updates": 10000,
        "world_state_hot_update_share": 0.2,
        "world_state_dead_rows_after": 7000,
        "world_state_vacuums_in_window": 1,
        "world_state_mb_before": 1.0,
        "world_state_mb_after": 3.0,
    }


def test_no_updates_gives_no_share_and_a_missing_table_gives_nothing() -> None:
    assert world_state_activity(BEFORE, BEFORE)["world_state_hot_update_share"] is None
    assert world_state_activity({}, BEFORE) == {}


def test_the_bench_waits_for_cache_warming_only_where_the_worker_runs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for flows, warms in [
        (None, True),  # every flow
        ("", True),
        ("world, invalidation", True),
        ("world", False),
        ("router,usage,world", False),
    ]:
        if flows is None:
            monkeypatch.delenv("SCRIBE_WORKER_FLOWS", raising=False)
        else:
            monkeypatch.setenv("SCRIBE_WORKER_FLOWS", flows)
        assert runs_the_invalidation_flow() is warms, flows
        # The world worker's own flows decide only when no second worker hosts the others.
        world_worker, second = (
            WorkerProcess({}, Path("a"), "a", 1),
            WorkerProcess({}, Path("b"), "a", 2),
        )
        assert invalidation_worker(world_worker, None) is (world_worker if warms else None)
        assert invalidation_worker(world_worker, second) is second


def test_a_writes_mean_time_and_the_loops_mean_lateness_over_the_window() -> None:
    before = {"write_s": 10.0, "writes": 100.0, "loop_lag_s": 1.0, "loop_probes": 50.0}
    after = {"write_s": 13.0, "writes": 120.0, "loop_lag_s": 1.5, "loop_probes": 150.0}
    assert window_means(before, after) == {
        "world_write_mean_ms": 150.0,
        "world_writes_in_window": 20.0,
        "event_loop_lag_mean_ms": 5.0,
    }
    assert window_means(before, before)["world_write_mean_ms"] is None  # no write in it


def test_the_collectors_pauses_over_the_window_in_all_generations() -> None:
    before = {"gc_pause_s": 2.5, "gc_collections": 40.0}
    after = wait_totals(
        [
            Sample("scribe_gc_pause_seconds_sum", {"generation": "0"}, 4.0),
            Sample("scribe_gc_pause_seconds_count", {"generation": "0"}, 50.0),
            Sample("scribe_gc_pause_seconds_sum", {"generation": "2"}, 0.3404),
            Sample("scribe_gc_pause_seconds_count", {"generation": "2"}, 2.0),
        ],
        [],
    )
    assert collector_pauses(before, after) == {
        "gc_pause_seconds_in_window": 1.84,
        "gc_collections_in_window": 12.0,
    }
    assert collector_pauses(after, after) == {  # none in the window
        "gc_pause_seconds_in_window": 0.0,
        "gc_collections_in_window": 0.0,
    }


def invalidation_samples(read: float, lags: tuple[float, float]) -> list[Sample]:
    """What the worker hosting the invalidation flows reports of them."""
    return [
        Sample(
            "scribe_messages_in_total",
            {"agent": "invalidation", "topic": "cache.invalidations"},
            read,
        ),
        *(
            Sample(
                "scribe_consumer_lag_messages",
                {"group": "a.invalidation", "topic": "cache.invalidations", "partition": p},
                lag,
            )
            for p, lag in zip("01", lags, strict=True)
        ),
        Sample(
            "scribe_consumer_lag_messages",
            {"group": "a.invalidation-cdn", "topic": "cache.invalidations", "partition": "0"},
            lags[0] + 1,
        ),
    ]


def world_samples(sent: float) -> list[Sample]:
    """What the world worker reports that the invalidation account reads (or must not)."""
    return [
        Sample(
            "scribe_messages_out_total", {"agent": "world", "topic": "cache.invalidations"}, sent
        ),
        # Another flow's messages out, and the world's in and its lag, count for nothing here.
        Sample("scribe_messages_out_total", {"agent": "usage", "topic": "x"}, 7.0),
        Sample("scribe_messages_in_total", {"agent": "world-events", "topic": "x"}, 9.0),
        Sample(
            "scribe_consumer_lag_messages",
            {"group": "a.world", "topic": "world.events", "partition": "0"},
            5.0,
        ),
    ]


EXPECTED_PROGRESS = {
    "invalidations_sent_in_window": 5000.0,
    "invalidations_read_in_window": 2000.0,
    "invalidations_behind_at_end": 3100.0,
    "cdn_invalidations_behind_at_end": 1501.0,
}


def test_what_the_world_sent_the_invalidation_flow_read_and_left_behind() -> None:
    def totals(sent: float, read: float, lags: tuple[float, float]) -> dict[str, float]:
        return wait_totals(world_samples(sent) + invalidation_samples(read, lags), [])

    before, after = totals(1000.0, 900.0, (50.0, 50.0)), totals(6000.0, 2900.0, (1500.0, 1600.0))
    assert invalidation_progress(before, after) == EXPECTED_PROGRESS


def test_apart_the_invalidation_flows_account_comes_from_the_second_worker() -> None:
    def totals(sent: float, read: float, lags: tuple[float, float]) -> dict[str, float]:
        return wait_totals(world_samples(sent), invalidation_samples(read, lags))

    before, after = totals(1000.0, 900.0, (50.0, 50.0)), totals(6000.0, 2900.0, (1500.0, 1600.0))
    assert invalidation_progress(before, after) == EXPECTED_PROGRESS
    # The world worker's own figures are its alone: the second worker's collector is not its.
    paused = [Sample("scribe_gc_pause_seconds_sum", {"generation": "0"}, 4.0)]
    assert wait_totals([], paused)["gc_pause_s"] == 0.0
    assert wait_totals(paused, [])["gc_pause_s"] == 4.0


def test_the_loop_threads_window_on_a_core_waiting_for_one_and_idle() -> None:
    assert loop_thread_shares((0.87, 0.06, 0.07)) == {
        "worker_loop_thread_running_share": 0.87,
        "worker_loop_thread_waiting_share": 0.06,
        "worker_loop_thread_idle_share": 0.07,
    }
    assert loop_thread_shares(None) == {}  # no schedstat: nothing claimed
