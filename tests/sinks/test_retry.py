"""A failed write is retried until it succeeds, unless the worker is stopping: then it ends
with `StoppingError` at once (also when the stop begins mid-backoff)."""

from __future__ import annotations

import asyncio
import time

import pytest

from sinks.retry import StoppingError, StopSignal, until_written


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def write(self, value: int) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("pool is closed")
        return value


async def test_retries_until_written() -> None:
    sink = Flaky(failures=3)
    assert await until_written("test", sink.write, 7, first_delay=0.001) == 7
    assert sink.calls == 4


async def test_a_failure_while_stopping_is_not_retried() -> None:
    stopping = StopSignal()
    stopping.set()
    sink = Flaky(failures=1)
    with pytest.raises(StoppingError, match=r"test: write failed \(attempt 1\) while the worker"):
        await until_written("test", sink.write, 7, stopping=stopping)
    assert sink.calls == 1


async def test_a_success_while_stopping_is_returned() -> None:
    stopping = StopSignal()
    stopping.set()
    assert await until_written("test", Flaky(failures=0).write, 7, stopping=stopping) == 7


async def test_a_stop_during_the_backoff_ends_it_at_once() -> None:
    stopping = StopSignal()
    sink = Flaky(failures=100)
    started = time.monotonic()
    writing = asyncio.create_task(
        until_written("test", sink.write, 7, first_delay=5.0, stopping=stopping)
    )
    await asyncio.sleep(0.05)
    stopping.set()
    with pytest.raises(StoppingError):
        await writing
    assert time.monotonic() - started < 1.0
    assert sink.calls == 1
