"""Lane scheduling: the off-peak window, the deferred queue, offsets safe to commit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.router.lanes import DeferredQueue, OffPeak
from runtime.concurrent import OffsetTracker
from runtime.settings import SettingsError

NOW = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return NOW.replace(hour=hour, minute=minute)


def test_offpeak_window_within_a_day() -> None:
    window = OffPeak.parse("01:00-05:30")
    assert window.contains(at(1)) and window.contains(at(5, 29))
    assert not window.contains(at(5, 30)) and not window.contains(at(0, 59))


def test_offpeak_window_wrapping_midnight() -> None:
    window = OffPeak.parse("22:00-06:00")
    assert window.contains(at(23)) and window.contains(at(0)) and window.contains(at(5, 59))
    assert not window.contains(at(6)) and not window.contains(at(14))


@pytest.mark.parametrize("text", ["22:00", "nightly", "25:00-01:00", "03:00-03:00"])
def test_offpeak_window_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(SettingsError, match="SCRIBE_ROUTER_OFFPEAK"):
        OffPeak.parse(text)


def test_deferred_queue_releases_in_arrival_order() -> None:
    queue: DeferredQueue[str] = DeferredQueue()
    for name in "abcde":
        queue.add(name, None)
    assert queue.in_order(2) == ["a", "b"]
    assert len(queue) == 3
    assert queue.in_order(10) == ["c", "d", "e"]
    assert len(queue) == 0


def test_near_deadlines_are_promoted_ahead_of_order_and_only_once() -> None:
    queue: DeferredQueue[str] = DeferredQueue()
    queue.add("no-deadline", None)
    queue.add("far", NOW + timedelta(hours=2))
    queue.add("near", NOW + timedelta(seconds=30))
    queue.add("past", NOW - timedelta(seconds=1))
    promoted = queue.promoted(NOW, timedelta(seconds=60))
    assert promoted == ["past", "near"]
    assert queue.in_order(10) == ["no-deadline", "far"]
    assert queue.promoted(NOW + timedelta(hours=3), timedelta(seconds=60)) == []


def test_drop_forgets_requests_of_revoked_partitions() -> None:
    queue: DeferredQueue[tuple[int, str]] = DeferredQueue()
    for partition, name in [(0, "a"), (1, "b"), (0, "c"), (1, "d")]:
        queue.add((partition, name), NOW + timedelta(seconds=5))
    assert queue.drop(lambda item: item[0] != 1) == 2
    assert len(queue) == 2
    assert queue.promoted(NOW, timedelta(seconds=60)) == [(0, "a"), (0, "c")]


def test_offsets_commit_up_to_the_lowest_unfinished() -> None:
    tracker = OffsetTracker()
    for offset in range(10, 15):
        tracker.received("p0", offset)
    assert tracker.committable() == {"p0": 10}
    tracker.finished("p0", 12)
    tracker.finished("p0", 13)
    assert tracker.committable() == {"p0": 10}, "10 and 11 are still running"
    tracker.finished("p0", 10)
    assert tracker.committable() == {"p0": 11}
    tracker.finished("p0", 11)
    tracker.finished("p0", 14)
    assert tracker.committable() == {"p0": 15}


def test_offsets_of_a_forgotten_partition_are_not_committed() -> None:
    tracker = OffsetTracker()
    tracker.received("p0", 3)
    tracker.received("p1", 7)
    tracker.forget("p1")
    tracker.finished("p1", 7)
    assert tracker.committable() == {"p0": 3}


def test_dead_lettered_records_between_open_ones_are_committed_past() -> None:
    tracker = OffsetTracker()
    tracker.received("p0", 0)
    tracker.received("p0", 2)
    tracker.read_to("p0", 4)  # 1 and 3 were dead-lettered while read
    assert tracker.committable() == {"p0": 0}
    tracker.finished("p0", 0)
    assert tracker.committable() == {"p0": 2}
    tracker.finished("p0", 2)
    assert tracker.committable() == {"p0": 4}
