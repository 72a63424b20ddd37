"""Lane scheduling, pure: which held deferred requests run now (the offsets safe to commit when
requests finish out of order are the runtime's, `runtime.concurrent.OffsetTracker`)."""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Generic, TypeVar

from runtime.settings import SettingsError

T = TypeVar("T")


@dataclass(frozen=True)
class OffPeak:
    """A daily UTC window such as 22:00-06:00 (it may wrap past midnight)."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> OffPeak:
        try:
            start_text, end_text = text.split("-")
            start = time.fromisoformat(start_text.strip())
            end = time.fromisoformat(end_text.strip())
        except ValueError:
            raise SettingsError(
                f"SCRIBE_ROUTER_OFFPEAK: {text!r} is not a UTC window such as 22:00-06:00"
            ) from None
        if start == end:
            raise SettingsError("SCRIBE_ROUTER_OFFPEAK: the window's start and end are equal")
        return cls(start, end)

    def contains(self, moment: datetime) -> bool:
        """`moment` must be in UTC."""
        clock = moment.time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= clock < self.end
        return clock >= self.start or clock < self.end


@dataclass
class _Held(Generic[T]):
    item: T
    deadline: datetime | None
    released: bool = False


class DeferredQueue(Generic[T]):
    """Deferred requests held in arrival order. A request whose deadline is within the promotion
    margin leaves at once (whatever the window or rate cap); the rest leave in order, when the
    off-peak window is open, as many as the rate cap allows."""

    def __init__(self) -> None:
        self._fifo: deque[_Held[T]] = deque()
        self._by_deadline: list[tuple[datetime, int, _Held[T]]] = []
        self._sequence = itertools.count()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, item: T, deadline: datetime | None) -> None:
        held = _Held(item, deadline)
        self._fifo.append(held)
        if deadline is not None:
            heapq.heappush(self._by_deadline, (deadline, next(self._sequence), held))
        self._count += 1

    def promoted(self, now: datetime, margin: timedelta) -> list[T]:
        """Requests whose deadline is at most `margin` away (or already past)."""
        due: list[T] = []
        while self._by_deadline and self._by_deadline[0][0] - now <= margin:
            _, _, held = heapq.heappop(self._by_deadline)
            if not held.released:
                due.append(self._release(held))
        return due

    def in_order(self, limit: int) -> list[T]:
        taken: list[T] = []
        while self._fifo and len(taken) < limit:
            held = self._fifo.popleft()
            if not held.released:
                taken.append(self._release(held))
        return taken

    def drop(self, keep: Callable[[T], bool]) -> int:
        """Forget the held requests `keep` refuses (their partition was revoked)."""
        dropped = 0
        for held in self._fifo:
            if not held.released and not keep(held.item):
                held.released = True
                dropped += 1
        self._count -= dropped
        self._fifo = deque(h for h in self._fifo if not h.released)
        return dropped

    def _release(self, held: _Held[T]) -> T:
        held.released = True
        self._count -= 1
        return held.item
