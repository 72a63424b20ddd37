from __future__ import annotations

import pytest

from agents.world.schedule import TickSchedule


def schedule(**overrides: float) -> TickSchedule:
    options = {"interval": 1.0, "idle_after": 10.0, "catch_up": 5} | overrides
    return TickSchedule(options["interval"], options["idle_after"], int(options["catch_up"]))


def test_an_active_world_ticks_once_per_interval() -> None:
    plan = schedule()
    plan.touch("w", 100.0, 100.0)
    assert plan.due(100.5, budget=100).due == []
    first = plan.due(101.0, budget=100)
    assert [(d.world_id, d.scheduled) for d in first.due] == [("w", [101.0])]
    assert plan.due(101.9, budget=100).due == []
    assert plan.due(102.0, budget=100).due[0].scheduled == [102.0]


def test_missed_intervals_are_caught_up_in_bounded_steps_not_skipped() -> None:
    plan = schedule(catch_up=3, idle_after=100.0)
    plan.touch("w", 0.0, 0.0)
    taken: list[float] = []
    first = plan.due(8.0, budget=100)
    taken += first.due[0].scheduled
    assert taken == [1.0, 2.0, 3.0]
    assert plan.backlog(8.0) == 5
    for _ in range(5):
        for due in plan.due(8.0, budget=100).due:
            taken += due.scheduled
    assert taken == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]


def test_the_round_budget_is_shared_oldest_first() -> None:
    plan = schedule(catch_up=10, idle_after=100.0)
    plan.touch("late", 0.0, 0.0)
    plan.touch("later", 3.0, 3.0)
    taken = plan.due(10.0, budget=4)
    assert [(d.world_id, len(d.scheduled)) for d in taken.due] == [("late", 4)]
    rest = plan.due(10.0, budget=100)
    assert {d.world_id: d.scheduled[0] for d in rest.due} == {"late": 5.0, "later": 4.0}


def test_a_world_without_activity_goes_idle_then_resumes_on_its_next_event() -> None:
    plan = schedule(idle_after=3.0)
    plan.touch("w", 0.0, 0.0)
    ticks = []
    idle = []
    for now in (1.0, 2.0, 3.0, 4.0, 5.0):
        round_ = plan.due(now, budget=100)
        ticks += [t for d in round_.due for t in d.scheduled]
        idle += round_.went_idle
    assert ticks == [1.0, 2.0]  # ticks scheduled before the idle deadline (3.0) only
    assert idle == ["w"] and "w" not in plan
    assert plan.due(50.0, budget=100).due == []
    plan.touch("w", 50.0, 50.0)
    assert plan.due(51.0, budget=100).due[0].scheduled == [51.0]  # no catch-up of idle time


def test_activity_extends_the_idle_deadline() -> None:
    plan = schedule(idle_after=3.0)
    plan.touch("w", 0.0, 0.0)
    assert plan.due(1.0, budget=100).due[0].scheduled == [1.0]
    plan.touch("w", 1.5, 1.5)
    round_ = plan.due(4.0, budget=100)
    assert round_.due[0].scheduled == [2.0, 3.0, 4.0]
    assert round_.went_idle == ["w"]  # the next tick (5.0) would fall after 1.5 + 3.0


def test_resume_from_storage_catches_up_until_the_idle_deadline() -> None:
    plan = schedule(idle_after=5.0, catch_up=100)
    plan.resume("w", next_tick_at=10.0, last_activity_at=8.0)
    round_ = plan.due(30.0, budget=100)
    assert round_.due[0].scheduled == [10.0, 11.0, 12.0]
    assert round_.went_idle == ["w"]


def test_removed_worlds_do_not_tick() -> None:
    plan = schedule()
    plan.touch("w", 0.0, 0.0)
    plan.remove("w")
    assert plan.due(5.0, budget=100).due == []


def test_settings_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        schedule(interval=0.0)


def test_activity_counts_from_the_events_own_time() -> None:
    plan = schedule(idle_after=10.0)
    plan.touch("old", 5.0, 100.0)  # read again long after it happened
    assert "old" not in plan
    plan.touch("recent", 95.0, 100.0)
    assert plan.last_activity_at("recent") == 95.0
    assert plan.due(101.0, budget=100).due[0].scheduled == [101.0]
    plan.touch("future", 500.0, 100.0)  # a producer clock ahead counts as now
    assert plan.last_activity_at("future") == 100.0


def test_overdue_seconds_is_the_age_of_the_most_overdue_tick() -> None:
    plan = schedule(catch_up=3, idle_after=100.0)
    assert plan.overdue_seconds(5.0) == 0.0  # no world
    plan.touch("w", 0.0, 0.0)  # first tick due at 1.0
    plan.touch("v", 3.0, 3.0)  # first tick due at 4.0
    assert plan.overdue_seconds(0.5) == 0.0  # nothing due yet
    assert plan.overdue_seconds(8.0) == 7.0
    plan.due(8.0, budget=100)  # w takes 1, 2, 3; v takes 4, 5, 6
    assert plan.overdue_seconds(8.0) == 4.0  # w's tick at 4.0, v's at 7.0
    plan.remove("w")  # its heap entry is stale now
    assert plan.overdue_seconds(8.0) == 1.0
    plan.due(8.0, budget=100)  # v takes 7, 8: caught up, its next tick is at 9.0
    assert plan.overdue_seconds(8.0) == 0.0
