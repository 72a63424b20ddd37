"""How the worker and the gateway log: as text or one JSON object per line (SCRIBE_LOG_FORMAT),
with repeats limited.

Repeated log lines, limited: while a server is down, every retry loop and client logs the
same failure several times a second. The first warning (or worse) of each (logger, level,
message template) goes through; its repeats are held back for a window; then one line says how
many were held back, and the next repeat goes through again. Records below `min_level` (a
worker's start and stop: one line per group joined, per service stopped) all go through.

Secrets are masked before any of this: the redactor (`runtime.security.Redactor`) cleans each
record's message and traceback when the record is made, so both formats print only that."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

WINDOW_S = 10.0

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def flow_of(record: logging.LogRecord) -> str | None:
    """The flow a record concerns: its `flow` attribute (`extra={"flow": ...}`), else the
    package of a logger under `agents.<flow>.` (`agents.context`, a module, names no flow)."""
    flow = getattr(record, "flow", None)
    if flow:
        return str(flow)
    parts = record.name.split(".")
    if len(parts) >= 3 and parts[0] == "agents":
        return parts[1]
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (ISO 8601, UTC, milliseconds), `level`, `logger`,
    `message`; `flow` when the record concerns one, `trace_id` when the record carries one
    (made inside a span while tracing is on: runtime.tracing sets it), `exception` (the
    traceback) when there is one, `stack` for `stack_info=True`, `held_back` on a repeat
    limiter's summary. Line breaks inside
    a message or traceback are escaped, so a record is always exactly one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        flow = flow_of(record)
        if flow is not None:
            entry["flow"] = flow
        trace_id = getattr(record, "trace_id", None)
        if trace_id is not None:
            # OpenTelemetry's ids are 128-bit ints, shown as 32 hex digits.
            entry["trace_id"] = f"{trace_id:032x}" if isinstance(trace_id, int) else str(trace_id)
        held_back = getattr(record, "held_back", None)
        if held_back is not None:
            entry["held_back"] = held_back
        # The redactor left a cleaned traceback in exc_text; format one only where it did not.
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        try:
            line = orjson.dumps(entry, default=str).decode()
        except orjson.JSONEncodeError:
            # A string JSON cannot hold (a lone surrogate): escaped, the record still prints.
            line = orjson.dumps({k: _encodable(v) for k, v in entry.items()}, default=str).decode()
        return line.translate(_LINE_BREAKS_JSON_KEEPS)


# Line breaks JSON may leave unescaped in a string, which line readers (Python's splitlines,
# some log shippers) still split at; they only occur inside strings, where the escape is valid.
_LINE_BREAKS_JSON_KEEPS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def _encodable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def formatter_for(log_format: str) -> logging.Formatter:
    """The formatter of a `SCRIBE_LOG_FORMAT` value (`LOG_FORMATS`)."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")


def log_to_stderr(log_format: str, level: int = logging.INFO) -> logging.Handler:
    """The root logger writes to stderr in `log_format`, and Python's warnings go through it
    (printed raw, a warning would be a line of another format)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return handler


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
                "held_back": window.held_back,
                "flow": getattr(example, "flow", None),
                # The last held-back record's, not that of whatever span is current now.
                "trace_id": getattr(example, "trace_id", None),
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
