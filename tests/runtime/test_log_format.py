"""SCRIBE_LOG_FORMAT=json: one JSON object per record and per line, with the fields an operator
filters on; the repeat limiter's summaries and the redactor's masks come through it."""

from __future__ import annotations

import io
import logging
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from runtime.logs import JsonFormatter, RepeatLimiter, formatter_for, log_to_stderr
from runtime.security import Redactor
from runtime.settings import Settings, SettingsError


class Logged:
    """A logger whose records go through a JsonFormatter (and a repeat limiter) into a string."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(JsonFormatter())
        self.limiter = RepeatLimiter(self.handler, window=10.0)
        self.handler.addFilter(self.limiter)

    def logger(self, name: str) -> logging.Logger:
        log = logging.getLogger(name)
        if self.handler not in log.handlers:
            log.addHandler(self.handler)
        log.setLevel(logging.DEBUG)
        log.propagate = False
        return log

    def lines(self) -> list[str]:
        text = self.stream.getvalue()
        assert text.endswith("\n") or not text
        return text.splitlines()

    def entries(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines()]


@pytest.fixture
def logged() -> Iterator[Logged]:
    logged = Logged()
    try:
        yield logged
    finally:
        for log in logging.Logger.manager.loggerDict.values():
            if isinstance(log, logging.Logger) and logged.handler in log.handlers:
                log.removeHandler(logged.handler)
                log.propagate = True


@pytest.fixture
def redacting() -> Iterator[None]:
    previous = logging.getLogRecordFactory()
    Redactor(["pw-1234"]).install()
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


def test_a_record_has_time_level_logger_and_message(logged: Logged) -> None:
    before = datetime.now(UTC)
    logged.logger("scribe.test.json").info("%d events from %s", 3, "u-1")
    (entry,) = logged.entries()
    assert entry.keys() == {"time", "level", "logger", "message"}, "no empty optional fields"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "scribe.test.json"
    assert entry["message"] == "3 events from u-1"
    assert entry["time"].endswith("Z")
    moment = datetime.fromisoformat(entry["time"])
    assert moment.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= moment <= datetime.now(UTC) + timedelta(seconds=1)


def test_flow_comes_from_extra_or_from_a_logger_under_agents(logged: Logged) -> None:
    logged.logger("runtime.flow").warning("batch not written", extra={"flow": "world"})
    logged.logger("agents.usage.store").info("detached")
    logged.logger("agents.intake").warning("dead-lettered", extra={"flow": "usage"})
    logged.logger("agents.context").info("a module of the flows' package, no flow")
    logged.logger("sinks.retry").warning("write failed")
    assert [e.get("flow") for e in logged.entries()] == ["world", "usage", "usage", None, None]


def test_trace_id_is_there_only_when_the_record_carries_one(logged: Logged) -> None:
    log = logged.logger("scribe.test.trace")
    log.info("plain")
    log.info("as text", extra={"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"})
    log.info("as OpenTelemetry's int", extra={"trace_id": 0x4BF92F3577B34DA6A3CE929D0E0E4736})
    plain, text, number = logged.entries()
    assert "trace_id" not in plain
    assert text["trace_id"] == number["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_an_exception_is_one_line_with_its_traceback(logged: Logged) -> None:
    log = logged.logger("scribe.test.exception")
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        log.exception("write failed")
    (line,) = logged.lines()
    entry = orjson.loads(line)
    assert entry["level"] == "ERROR" and entry["message"] == "write failed"
    assert entry["exception"].startswith("Traceback (most recent call last):\n")
    assert entry["exception"].endswith("RuntimeError: boom\nsecond line")


def test_a_message_with_newlines_stays_one_line(logged: Logged) -> None:
    message = "first\nsecond\r\nthird\u2028fourth\x85fifth\ttab"
    logged.logger("scribe.test.newlines").warning(message)
    (line,) = logged.lines()
    assert orjson.loads(line)["message"] == message


def test_non_ascii_is_kept_and_a_lone_surrogate_does_not_lose_the_line(logged: Logged) -> None:
    log = logged.logger("scribe.test.unicode")
    log.info("world %s: Zoë walks to 東京 🎲 (עברית)", "w-1")
    log.info(
        "a file name read with surrogateescape: %s", b"caf\xe9".decode("utf-8", "surrogateescape")
    )
    text, surrogate = logged.entries()
    assert text["message"] == "world w-1: Zoë walks to 東京 🎲 (עברית)"
    assert surrogate["message"] == "a file name read with surrogateescape: caf\\udce9"
    assert surrogate["level"] == "INFO" and surrogate["logger"] == "scribe.test.unicode"


def test_secrets_are_masked_in_the_message_and_the_traceback(
    logged: Logged, redacting: None
) -> None:
    log = logged.logger("scribe.test.redaction")
    log.warning("connecting to %s", "postgresql://scribe:pw-1234@db:5432/scribe")
    try:
        raise ConnectionError("password authentication failed: pw-1234")
    except ConnectionError:
        log.exception("pool not opened for postgresql://scribe:pw-1234@db/scribe")
    assert "pw-1234" not in logged.stream.getvalue()
    connecting, failed = logged.entries()
    assert connecting["message"] == "connecting to postgresql://scribe:***@db:5432/scribe"
    assert failed["message"] == "pool not opened for postgresql://scribe:***@db/scribe"
    assert failed["exception"].endswith("ConnectionError: password authentication failed: ***")


def test_held_back_repeats_are_summed_up_in_a_json_line(logged: Logged, redacting: None) -> None:
    log = logged.logger("sinks.retry")
    for attempt in range(1, 6):
        log.warning(
            "%s: write failed (attempt %d): %s",
            "postgres.ledger",
            attempt,
            "postgresql://scribe:pw-1234@db/scribe refused",
            extra={"flow": "usage"},
        )
    logged.limiter.flush()
    first, summary = logged.entries()
    assert first["message"].startswith("postgres.ledger: write failed (attempt 1)")
    assert summary["level"] == "WARNING" and summary["logger"] == "sinks.retry"
    assert summary["held_back"] == 4 and summary["flow"] == "usage"
    assert summary["message"] == (
        "4 more like this in 10 s, held back; the last: postgres.ledger: write failed "
        "(attempt 5): postgresql://scribe:***@db/scribe refused"
    )
    assert "pw-1234" not in logged.stream.getvalue()


@pytest.fixture
def root_restored() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield root
    finally:
        logging.captureWarnings(False)
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def test_log_to_stderr_in_json_takes_warnings_too(
    root_restored: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        log_to_stderr("json")
        logging.getLogger("scribe.worker").info("created topics: %s", "usage.events")
        warnings.warn("a deprecated call", DeprecationWarning, stacklevel=1)
    entries = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [e["logger"] for e in entries] == ["scribe.worker", "py.warnings"]
    assert "DeprecationWarning: a deprecated call" in entries[1]["message"]
    assert root_restored.handlers[0].stream is sys.stderr  # type: ignore[attr-defined]


def test_text_stays_the_default_format() -> None:
    record = logging.LogRecord("scribe.gateway", logging.INFO, __file__, 1, "up", None, None)
    assert formatter_for("text").format(record).endswith(" INFO scribe.gateway up")
    assert orjson.loads(formatter_for("json").format(record))["message"] == "up"


def test_the_setting_takes_text_or_json_and_names_them_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SCRIBE_LOG_FORMAT", raising=False)
    assert Settings.from_env().log_format == "text"
    monkeypatch.setenv("SCRIBE_LOG_FORMAT", "json")
    assert Settings.from_env().log_format == "json"
    monkeypatch.setenv("SCRIBE_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match=r"SCRIBE_LOG_FORMAT: 'xml' is not one of text, json"):
        Settings.from_env()
