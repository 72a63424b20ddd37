"""Coalescing: identical targets read within one window become one purge.

`AdaptiveWindow` decides how long the flow's window stays open: not at all while the flow is
light (an invalidation is delivered as soon as it is read), up to the maximum window under load.

A window opens with the first message after the previous drain and is due `window_seconds`
later; while the sinks are busy it keeps filling, so a burst merges more. Each target keeps
the messages that asked for it, so a target that cannot be delivered dead-letters exactly
those messages, and each window keeps the offsets to commit once it is delivered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from schemas.events import CacheInvalidation
from topics.dlq import Origin


class TargetKind(StrEnum):
    KEY = "key"
    PATTERN = "pattern"
    TAG = "tag"
    URL = "url"


class Target(NamedTuple):
    kind: TargetKind
    value: str


# What each flow coalesces: the Redis flow removes keys, patterns and tags; the CDN flow purges
# URLs and tags (surrogate keys).
FOR_REDIS = frozenset({TargetKind.KEY, TargetKind.PATTERN, TargetKind.TAG})
FOR_THE_CDN = frozenset({TargetKind.TAG, TargetKind.URL})
ALL_KINDS = frozenset(TargetKind)


@dataclass
class Window:
    """Unique targets in first-seen order, the messages behind each, and what to commit."""

    targets: dict[Target, list[Origin]] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    occurred_at: list[datetime] = field(default_factory=list)
    # (topic, partition) -> the offset to commit: one past the last message read.
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0
    targets_in: int = 0

    def values(self, kind: TargetKind) -> list[str]:
        return [t.value for t in self.targets if t.kind is kind]

    @property
    def keys(self) -> list[str]:
        return self.values(TargetKind.KEY)

    @property
    def patterns(self) -> list[str]:
        return self.values(TargetKind.PATTERN)

    @property
    def tags(self) -> list[str]:
        return self.values(TargetKind.TAG)

    @property
    def urls(self) -> list[str]:
        return self.values(TargetKind.URL)

    @property
    def targets_out(self) -> int:
        return len(self.targets)

    def origins_of(self, targets: Iterable[Target]) -> list[Origin]:
        """The messages that asked for any of `targets`, each once, in offset order."""
        seen: dict[tuple[str, int, int], Origin] = {}
        for target in targets:
            for origin in self.targets.get(target, ()):
                seen.setdefault((origin.topic, origin.partition, origin.offset), origin)
        return [seen[k] for k in sorted(seen)]

    def record(self, origin: Origin) -> None:
        self.messages += 1
        tp = (origin.topic, origin.partition)
        self.offsets[tp] = max(self.offsets.get(tp, 0), origin.offset + 1)

    def add(
        self, event: CacheInvalidation, origin: Origin, kinds: frozenset[TargetKind] = ALL_KINDS
    ) -> None:
        """Take `event`'s targets of `kinds` (its other targets are another flow's)."""
        self.record(origin)
        self.ids.append(event.id)
        self.occurred_at.append(event.occurred_at)
        targets = self.targets
        for kind, values in (
            (TargetKind.KEY, event.keys),
            (TargetKind.PATTERN, event.patterns),
            (TargetKind.TAG, event.tags),
            (TargetKind.URL, event.urls),
        ):
            if values and kind in kinds:
                self.targets_in += len(values)
                for value in values:
                    targets.setdefault(Target(kind, value), []).append(origin)


class AdaptiveWindow:
    """When the invalidation flow's batch (its coalescing window) is due.

    The load is the records read within the last `max_seconds`. Below `busy_per_second` of
    them (the flow is idle or light) a batch is due at once: what one poll read is delivered
    without waiting, and repeats are rare at that rate anyway. At or above it (a burst) a
    batch stays open until `max_seconds` after its first record, so repeats merge. Either way
    the runner keeps a batch filling while the one before it is written, and hands it over
    when full. `busy_per_second` 0: always the full window.
    """

    def __init__(self, max_seconds: float, busy_per_second: float) -> None:
        if max_seconds <= 0:
            raise ValueError("the coalescing window must be positive")
        if busy_per_second < 0:
            raise ValueError("the busy rate cannot be negative")
        self.max_seconds = max_seconds
        self.busy_records = busy_per_second * max_seconds
        self._arrivals: deque[tuple[float, int]] = deque()
        self._recent = 0

    def arrived(self, records: int, now: float) -> None:
        self._arrivals.append((now, records))
        self._recent += records
        self._forget_before(now - self.max_seconds)

    def load(self, now: float) -> int:
        """Records read within the last `max_seconds`."""
        self._forget_before(now - self.max_seconds)
        return self._recent

    def busy(self, now: float) -> bool:
        return self.load(now) >= self.busy_records

    def time_left(self, opened_at: float, now: float) -> float:
        if not self.busy(now):
            return 0.0
        return opened_at + self.max_seconds - now

    def _forget_before(self, since: float) -> None:
        while self._arrivals and self._arrivals[0][0] <= since:
            self._recent -= self._arrivals.popleft()[1]
