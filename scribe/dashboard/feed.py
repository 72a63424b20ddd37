"""The dashboard's live feed: once a second a snapshot of the worker's registry becomes a frame
(figures.build_frame), sent as a server-sent event to every open page; the last minutes of chart
points are kept so a page that connects starts with history."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import UTC, datetime

import orjson
from prometheus_client import CollectorRegistry

from runtime.health import HealthChecks
from scribe.dashboard.figures import Json, Snapshot, build_frame, take_snapshot

FRAME_INTERVAL_S = 1.0
WINDOW_S = 5.0
HISTORY_POINTS = 300
HEALTH_EVERY_S = 5.0
SUBSCRIBER_BACKLOG = 16


def sse_message(event: str, data: object) -> bytes:
    """One server-sent event; orjson writes no newlines, so the data fits one `data:` line."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class DashboardFeed:
    def __init__(
        self, registry: CollectorRegistry, health: HealthChecks, baseline_at: float
    ) -> None:
        self.registry = registry
        self.health = health
        # Before the first window fills, rates are taken since the process started.
        self._baseline = Snapshot(baseline_at)
        self._snapshots: deque[Snapshot] = deque()
        self._points: deque[Json] = deque(maxlen=HISTORY_POINTS)
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._next_health = 0.0
        self.latest: Json | None = None

    def _earlier(self, now: float) -> Snapshot:
        while len(self._snapshots) > 1 and self._snapshots[1].at <= now - WINDOW_S:
            self._snapshots.popleft()
        if self._snapshots and self._snapshots[0].at <= now - WINDOW_S / 2:
            return self._snapshots[0]
        return self._baseline

    async def tick(self) -> Json:
        if time.monotonic() >= self._next_health:
            self._next_health = time.monotonic() + HEALTH_EVERY_S
            await self.health.run()
        now = time.time()
        current = take_snapshot(self.registry.collect(), now)
        frame = build_frame(current, self._earlier(now), datetime.fromtimestamp(now, UTC))
        self._snapshots.append(current)
        report = self.health.last_report
        frame["health"] = report.to_json() if report is not None else None
        self._points.append(frame["point"])
        self.latest = frame
        self._broadcast(sse_message("frame", frame))
        return frame

    def _broadcast(self, message: bytes) -> None:
        for queue in self._subscribers:
            if queue.full():  # a page that does not keep up skips frames, the worker never waits
                queue.get_nowait()
            queue.put_nowait(message)

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        queue.put_nowait(sse_message("history", list(self._points)))
        if self.latest is not None:
            queue.put_nowait(sse_message("frame", self.latest))
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        """End every open stream (the worker is stopping)."""
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
        self._subscribers.clear()
