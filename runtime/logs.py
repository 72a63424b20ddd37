"""Repeated log lines, limited: while a server is down, every retry loop and client logs the
same failure several times a second. The first warning (or worse) of each (logger, level,
message template) goes through; its repeats are held back for a window; then one line says how
many were held back, and the next repeat goes through again. Records below `min_level` (a
worker's start and stop: one line per group joined, per service stopped) all go through."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

WINDOW_S = 10.0

Key = tuple[str, int, str]


@dataclass
class _Window:
    opened: float
    held_back: int = 0
    example: logging.LogRecord | None = None  # the last record held back, for the summary


class RepeatLimiter(logging.Filter):
    """A filter for one handler; it hands the summaries of closed windows to that handler.
    Records keep the message the secret redactor left them (it runs when a record is made),
    and a summary quotes only that."""

    def __init__(
        self,
        handler: logging.Handler,
        window: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        min_level: int = logging.WARNING,
    ) -> None:
        super().__init__()
        self.handler = handler
        self.window = window
        self.min_level = min_level
        self.clock = clock
        self._windows: dict[Key, _Window] = {}
        self._next_sweep = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "repeats_summary", False):
            return True
        now = self.clock()
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            self._close_windows(now)
        if record.levelno < self.min_level:
            return True
        # A record the redactor cleaned has its message in `msg`; its template is kept aside.
        key = (record.name, record.levelno, str(getattr(record, "redacted_template", record.msg)))
        window = self._windows.get(key)
        if window is None:
            self._windows[key] = _Window(now)
            return True
        window.held_back += 1
        window.example = record
        return False

    def flush(self) -> None:
        """Say what is held back now (e.g. when the process stops)."""
        self._close_windows(float("inf"))

    def _close_windows(self, now: float) -> None:
        closed = [key for key, w in self._windows.items() if now - w.opened >= self.window]
        for key in closed:
            window = self._windows.pop(key)
            if window.example is not None:
                self.handler.handle(self._summary(window, min(now - window.opened, self.window)))

    def _summary(self, window: _Window, seconds: float) -> logging.LogRecord:
        example = window.example
        assert example is not None
        summary = logging.makeLogRecord(
            {
                "name": example.name,
                "levelno": example.levelno,
                "levelname": example.levelname,
                "msg": "%d more like this in %.0f s, held back; the last: %s",
                "args": (window.held_back, seconds, example.getMessage()),
                "created": time.time(),
                "process": example.process,
                "repeats_summary": True,
            }
        )
        summary.msecs = (summary.created % 1) * 1000
        return summary


def limit_repeats(
    handlers: Iterable[logging.Handler], window: float = WINDOW_S
) -> list[RepeatLimiter]:
    """Give each handler (the root logger's, once logging is set up) a `RepeatLimiter`."""
    limiters = []
    for handler in handlers:
        if any(isinstance(f, RepeatLimiter) for f in handler.filters):
            continue
        limiter = RepeatLimiter(handler, window)
        handler.addFilter(limiter)
        limiters.append(limiter)
    return limiters
