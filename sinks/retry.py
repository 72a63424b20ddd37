"""A sink write that fails is retried with capped exponential backoff, never dropped: the
agent waits here, so its partitions are not read further and their offsets stay put.

Once the worker is stopping (`STOPPING`), a failed write is not retried: `StoppingError` ends
the wait, the batch stays uncommitted, and whoever owns its partitions next reads it again."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from runtime.metrics import SINK_ERRORS, SINK_RETRIES, SINK_WRITE_SECONDS
from runtime.sink import SinkStopping

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRYABLE: tuple[type[BaseException], ...] = (OSError, ConnectionError, asyncio.TimeoutError)


class StoppingError(SinkStopping):
    """A write failed while the worker was stopping, and was not retried."""

    def __init__(self, sink: str, attempt: int, cause: BaseException) -> None:
        super().__init__(
            f"{sink}: write failed (attempt {attempt}) while the worker is stopping; not "
            f"retried: the batch stays uncommitted and is read again after a restart ({cause})"
        )
        self.sink = sink


class StopSignal:
    """Set once when the worker begins to stop; wakes every retry loop that waits on it.

    Plain futures rather than an `asyncio.Event`, so one module-level signal serves whichever
    event loop runs the worker (tests run several loops in one process)."""

    def __init__(self) -> None:
        self._set = False
        self._waiters: set[asyncio.Future[None]] = set()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        """For a worker started again in the same process."""
        self._set = False

    async def wait(self, timeout: float) -> bool:
        """Sleep `timeout` seconds or until set; True when set."""
        if self._set:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)
        return self._set


STOPPING = StopSignal()
# Never set: for a write that must still be tried while the worker stops, because what it
# sends is recorded nowhere else (the caller's own deadline bounds it).
KEEP_TRYING = StopSignal()


async def until_written(
    sink: str,
    write: Callable[..., Awaitable[T]],
    *args: Any,
    retryable: tuple[type[BaseException], ...] = RETRYABLE,
    first_delay: float = 0.1,
    max_delay: float = 5.0,
    on_retry: Callable[[BaseException], None] | None = None,
    stopping: StopSignal = STOPPING,
) -> T:
    """`on_retry` hears each failure, e.g. to mark the sink down while this waits. Raises
    `StoppingError` instead of retrying once `stopping` is set (also mid-backoff)."""
    # Created before the first failure, at zero: a sink's error rate is 0, not absent.
    errors, retries = SINK_ERRORS.labels(sink=sink), SINK_RETRIES.labels(sink=sink)
    delay = first_delay
    attempt = 1
    started = time.perf_counter()
    while True:
        try:
            result = await write(*args)
        except retryable as exc:
            errors.inc()
            if stopping.is_set():
                raise StoppingError(sink, attempt, exc) from exc
            retries.inc()
            if on_retry is not None:
                on_retry(exc)
            log.warning(
                "%s: write failed (attempt %d), retrying in %.1f s: %s", sink, attempt, delay, exc
            )
            if await stopping.wait(delay * (0.5 + random.random() / 2)):
                raise StoppingError(sink, attempt, exc) from exc
            delay = min(delay * 2, max_delay)
            attempt += 1
        except Exception:
            errors.inc()
            raise
        else:
            SINK_WRITE_SECONDS.labels(sink=sink).observe(time.perf_counter() - started)
            return result
