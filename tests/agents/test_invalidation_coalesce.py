from __future__ import annotations

import random
from typing import Any

import pytest

from agents.invalidation.coalesce import (
    AdaptiveWindow,
    Target,
    TargetKind,
    Window,
)
from schemas.events import CacheInvalidation
from schemas.examples import example
from topics.dlq import Origin


def _message(offset: int, partition: int = 0, **targets: Any) -> tuple[CacheInvalidation, Origin]:
    targets.setdefault("keys", [])  # the example's own key would be a target too
    event = example(CacheInvalidation, id=f"inv-{partition}-{offset}", **targets)
    origin = Origin("cache.invalidations", partition, offset, b"k", b"{}")
    return event, origin


def test_identical_targets_in_one_window_become_one() -> None:
    window = Window()
    for offset in range(10):
        window.add(*_message(offset, keys=["world:1"], urls=["https://cdn/x"]))
    window.add(*_message(10, keys=["world:2"]))
    assert window.keys == ["world:1", "world:2"]
    assert window.urls == ["https://cdn/x"]
    assert (window.targets_in, window.targets_out, window.messages) == (21, 3, 11)


def test_kinds_stay_apart() -> None:
    window = Window()
    window.add(*_message(0, keys=["x"], tags=["x"], patterns=["x"]))
    assert (window.keys, window.tags, window.patterns) == (["x"], ["x"], ["x"])


def test_offsets_cover_every_message_including_skipped_ones() -> None:
    window = Window()
    window.add(*_message(7, partition=0, keys=["a"]))
    window.record(Origin("cache.invalidations", 0, 8, None, b"bad"))
    window.add(*_message(3, partition=2, keys=["a"]))
    assert window.offsets == {("cache.invalidations", 0): 9, ("cache.invalidations", 2): 4}
    assert window.messages == 3
    assert window.ids == ["inv-0-7", "inv-2-3"]


def test_origins_of_a_target_are_the_messages_that_asked_for_it() -> None:
    window = Window()
    window.add(*_message(1, urls=["https://cdn/a", "https://cdn/b"]))
    window.add(*_message(2, urls=["https://cdn/b"]))
    window.add(*_message(3, keys=["k"]))
    b = Target(TargetKind.URL, "https://cdn/b")
    a = Target(TargetKind.URL, "https://cdn/a")
    assert [o.offset for o in window.origins_of([b])] == [1, 2]
    assert [o.offset for o in window.origins_of([a, b])] == [1, 2]
    assert window.origins_of([Target(TargetKind.URL, "https://cdn/none")]) == []


def test_a_burst_with_repeats_coalesces_to_its_distinct_targets() -> None:
    """10,000 invalidations over 1,000 targets read within one window: 1,000 purges."""
    rng = random.Random(1)
    targets = [f"t{i}" for i in range(1000) for _ in range(10)]
    rng.shuffle(targets)
    window = Window()
    for offset, tag in enumerate(targets):
        window.add(*_message(offset, tags=[tag]))
    assert window.targets_in == 10_000
    assert window.targets_out == 1000


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        AdaptiveWindow(0, busy_per_second=10_000)


def test_adaptive_window_delivers_at_once_while_the_flow_is_light() -> None:
    window = AdaptiveWindow(0.1, busy_per_second=10_000)  # busy: 1,000 records within 0.1 s
    window.arrived(1, now=10.0)
    assert window.time_left(opened_at=10.0, now=10.0) == 0.0
    window.arrived(998, now=10.05)  # 999 within the window: still light
    assert window.time_left(opened_at=10.05, now=10.05) == 0.0


def test_adaptive_window_holds_a_batch_open_up_to_the_window_under_load() -> None:
    window = AdaptiveWindow(0.1, busy_per_second=10_000)
    window.arrived(600, now=10.0)
    window.arrived(400, now=10.02)
    assert window.busy(10.02)
    assert window.time_left(opened_at=10.0, now=10.02) == pytest.approx(0.08)
    assert window.time_left(opened_at=10.0, now=10.099) == pytest.approx(0.001)
    assert window.time_left(opened_at=10.0, now=10.1) <= 0


def test_adaptive_window_load_is_what_arrived_within_the_last_window() -> None:
    window = AdaptiveWindow(0.1, busy_per_second=10_000)
    window.arrived(700, now=10.0)
    window.arrived(700, now=10.06)
    assert window.load(10.06) == 1400
    assert window.load(10.1) == 700  # the first poll's records left the window
    assert not window.busy(10.1)
    # A batch opened under load is due as soon as the load drops, not at its window's end.
    assert window.time_left(opened_at=10.06, now=10.1) == 0.0
    assert window.load(10.2) == 0


def test_adaptive_window_with_no_busy_rate_always_waits_the_full_window() -> None:
    window = AdaptiveWindow(0.05, busy_per_second=0)
    assert window.time_left(opened_at=3.0, now=3.0) == pytest.approx(0.05)
    window.arrived(1, now=3.0)
    assert window.time_left(opened_at=3.0, now=3.04) == pytest.approx(0.01)


def test_adaptive_window_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        AdaptiveWindow(0, busy_per_second=10)
    with pytest.raises(ValueError):
        AdaptiveWindow(0.1, busy_per_second=-1)
