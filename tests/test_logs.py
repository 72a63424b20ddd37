"""Repeated log lines are limited per (logger, level, template); secrets stay redacted."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

import pytest

from runtime.logs import RepeatLimiter, limit_repeats
from runtime.security import Redactor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO, RepeatLimiter, Clock]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    clock = Clock()
    limiter = RepeatLimiter(handler, window=10.0, clock=clock)
    handler.addFilter(limiter)
    log = logging.getLogger("scribe.test.repeats")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield log, stream, limiter, clock
    finally:
        log.removeHandler(handler)
        log.propagate = True


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_the_first_goes_through_repeats_are_counted_then_summarised(
    logged: tuple[logging.Logger, io.StringIO, RepeatLimiter, Clock],
) -> None:
    log, stream, _, clock = logged
    for attempt in range(1, 701):  # a second of the flood a closed pool made
        clock.now += 1 / 700
        log.warning("%s: write failed (attempt %d): %s", "postgres.world", attempt, "closed")
    assert lines(stream) == [
        "WARNING scribe.test.repeats postgres.world: write failed (attempt 1): closed"
    ]

    clock.now += 10.0
    log.info("something else")
    assert lines(stream)[1:] == [
        "WARNING scribe.test.repeats 699 more like this in 10 s, held back; the last: "
        "postgres.world: write failed (attempt 700): closed",
        "INFO scribe.test.repeats something else",
    ]
    log.warning("%s: write failed (attempt %d): %s", "postgres.world", 701, "closed")
    assert lines(stream)[-1].endswith("(attempt 701): closed"), "a new window opens"


def test_other_templates_levels_and_loggers_are_not_held_back(
    logged: tuple[logging.Logger, io.StringIO, RepeatLimiter, Clock],
) -> None:
    log, stream, _, _ = logged
    log.warning("a %s", 1)
    log.warning("b %s", 1)
    log.error("a %s", 2)
    logging.getLogger("scribe.test.repeats.child").warning("a %s", 3)
    log.warning("a %s", 4)
    assert len(lines(stream)) == 4, "the last is a repeat"


def test_records_below_warning_all_go_through(
    logged: tuple[logging.Logger, io.StringIO, RepeatLimiter, Clock],
) -> None:
    log, stream, _, _ = logged
    for group in ("usage", "world", "usage"):
        log.info("Joined group %r", group)
    assert len(lines(stream)) == 3


def test_flush_says_what_is_held_back(
    logged: tuple[logging.Logger, io.StringIO, RepeatLimiter, Clock],
) -> None:
    log, stream, limiter, _ = logged
    for n in range(5):
        log.warning("retry %d", n)
    limiter.flush()
    assert lines(stream) == [
        "WARNING scribe.test.repeats retry 0",
        "WARNING scribe.test.repeats 4 more like this in 10 s, held back; the last: retry 4",
    ]
    limiter.flush()
    assert len(lines(stream)) == 2


@contextlib.contextmanager
def redacting(secret: str) -> Iterator[None]:
    """Records made inside have `secret` masked, as in a worker; the factory is put back."""
    previous = logging.getLogRecordFactory()
    Redactor([secret]).install()
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


def test_secrets_stay_redacted_in_what_is_let_through_and_in_summaries(
    logged: tuple[logging.Logger, io.StringIO, RepeatLimiter, Clock],
) -> None:
    log, stream, limiter, _ = logged
    with redacting("pw-1234"):
        for _ in range(3):
            log.warning("connecting to %s", "postgresql://u:pw-1234@h/db")
        limiter.flush()
    text = stream.getvalue()
    assert "pw-1234" not in text
    assert lines(stream) == [
        "WARNING scribe.test.repeats connecting to postgresql://u:***@h/db",
        "WARNING scribe.test.repeats 2 more like this in 10 s, held back; the last: "
        "connecting to postgresql://u:***@h/db",
    ]


def test_limit_repeats_gives_each_handler_one_limiter() -> None:
    handlers = [logging.StreamHandler(io.StringIO()), logging.StreamHandler(io.StringIO())]
    assert len(limit_repeats(handlers)) == 2
    assert limit_repeats(handlers) == []
    assert all(len(h.filters) == 1 for h in handlers)


def test_a_redacted_record_is_still_grouped_by_its_template(
    logged: tuple[logging.Logger, io.StringIO, RepeatLimiter, Clock],
) -> None:
    log, stream, limiter, _ = logged
    with redacting("pw-1234"):
        for attempt in range(1, 6):  # the redactor replaces each template by its message
            log.warning("connecting to %s (attempt %d)", "redis://:pw-1234@h/0", attempt)
        limiter.flush()
    assert lines(stream) == [
        "WARNING scribe.test.repeats connecting to redis://:***@h/0 (attempt 1)",
        "WARNING scribe.test.repeats 4 more like this in 10 s, held back; the last: "
        "connecting to redis://:***@h/0 (attempt 5)",
    ]
