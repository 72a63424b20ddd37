"""Which of the worlds a worker owns are due to tick, from wall-clock time it is given.

Each active world ticks every `interval` seconds. A world whose last player activity is
`idle_after` seconds old stops: it leaves the schedule and costs nothing until its next event,
which resumes it one interval later (the idle time is not simulated); activity counts from
the event's own time, so events read again long after (a new consumer group, a replay) wake
nothing. Intervals missed while
the worker was busy or down are not dropped: they stay due and are caught up at most
`catch_up` ticks per world per round, oldest first, within a per-round budget.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass
class Slot:
    """An active world's next tick and last player activity (epoch seconds)."""

    next_tick_at: float
    last_activity_at: float


@dataclass(frozen=True)
class DueTicks:
    """`world_id` should tick once for each scheduled time, in order."""

    world_id: str
    scheduled: list[float]


@dataclass(frozen=True)
class Round:
    due: list[DueTicks]
    went_idle: list[str]


@dataclass
class TickSchedule:
    interval: float
    idle_after: float
    catch_up: int
    _slots: dict[str, Slot] = field(default_factory=dict)
    _heap: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.idle_after <= 0 or self.catch_up < 1:
            raise ValueError("interval and idle_after must be positive and catch_up at least 1")

    def __contains__(self, world_id: object) -> bool:
        return world_id in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def resume(self, world_id: str, next_tick_at: float, last_activity_at: float) -> None:
        """Schedule a world loaded from storage where it left off; its missed ticks are due."""
        self._slots[world_id] = Slot(next_tick_at, last_activity_at)
        heapq.heappush(self._heap, (next_tick_at, world_id))

    def touch(self, world_id: str, active_at: float, now: float) -> None:
        """Player activity at `active_at` (clamped to `now`): keeps a world active, or wakes an
        idle one (next tick in one interval) unless the activity is already older than
        `idle_after` (an old event read again wakes nothing)."""
        active_at = min(active_at, now)
        slot = self._slots.get(world_id)
        if slot is not None:
            slot.last_activity_at = max(slot.last_activity_at, active_at)
        elif active_at + self.idle_after > now:
            self.resume(world_id, now + self.interval, active_at)

    def remove(self, world_id: str) -> None:
        self._slots.pop(world_id, None)

    def slot(self, world_id: str) -> Slot | None:
        """The world's times while it is active; None once idle. Not to be changed."""
        return self._slots.get(world_id)

    def next_tick_at(self, world_id: str) -> float | None:
        slot = self._slots.get(world_id)
        return slot.next_tick_at if slot else None

    def last_activity_at(self, world_id: str) -> float | None:
        slot = self._slots.get(world_id)
        return slot.last_activity_at if slot else None

    def due(self, now: float, budget: int) -> Round:
        """Take up to `budget` due ticks, the most overdue worlds first."""
        due: list[DueTicks] = []
        went_idle: list[str] = []
        # Worlds served this round go back on the heap only after it, so none gets more than
        # `catch_up` ticks per round however far behind it is.
        served: list[tuple[float, str]] = []
        while self._heap and self._heap[0][0] <= now and budget > 0:
            at, world_id = heapq.heappop(self._heap)
            slot = self._slots.get(world_id)
            if slot is None or slot.next_tick_at != at:
                continue  # removed or rescheduled since this heap entry was pushed
            idle_at = slot.last_activity_at + self.idle_after
            scheduled: list[float] = []
            limit = min(self.catch_up, budget)
            tick_at = at
            while tick_at <= now and tick_at < idle_at and len(scheduled) < limit:
                scheduled.append(tick_at)
                tick_at = at + len(scheduled) * self.interval
            budget -= len(scheduled)
            slot.next_tick_at = tick_at
            if scheduled:
                due.append(DueTicks(world_id, scheduled))
            if tick_at >= idle_at:
                del self._slots[world_id]
                went_idle.append(world_id)
            else:
                served.append((tick_at, world_id))
        for entry in served:
            heapq.heappush(self._heap, entry)
        return Round(due, went_idle)

    def overdue_seconds(self, now: float) -> float:
        """How long the most overdue tick has been due; 0 when none is. It grows while the
        worker cannot keep up. Stale heap entries on top are dropped, as `due` drops them."""
        while self._heap:
            at, world_id = self._heap[0]
            slot = self._slots.get(world_id)
            if slot is not None and slot.next_tick_at == at:
                return max(0.0, now - at)
            heapq.heappop(self._heap)
        return 0.0

    def backlog(self, now: float) -> int:
        """Ticks due and not yet taken (an estimate over the heap's due entries). It walks the
        whole heap: for a look now and then, not for every round."""
        total = 0
        for at, world_id in self._heap:
            slot = self._slots.get(world_id)
            if at <= now and slot is not None and slot.next_tick_at == at:
                end = min(now, slot.last_activity_at + self.idle_after)
                total += max(0, int((end - at) // self.interval) + 1)
        return total
