"""A sink write that fails is retried with capped exponential backoff, never dropped: the
agent waits here, so its partitions are not read further and their offsets stay put."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from runtime.metrics import SINK_ERRORS, SINK_RETRIES, SINK_WRITE_SECONDS

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRYABLE: tuple[type[BaseException], ...] = (OSError, ConnectionError, asyncio.TimeoutError)


async def until_written(
    sink: str,
    write: Callable[..., Awaitable[T]],
    *args: Any,
    retryable: tuple[type[BaseException], ...] = RETRYABLE,
    first_delay: float = 0.1,
    max_delay: float = 5.0,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """`on_retry` hears each failure, e.g. to mark the sink down while this waits."""
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
            retries.inc()
            if on_retry is not None:
                on_retry(exc)
            log.warning(
                "%s: write failed (attempt %d), retrying in %.1f s: %s", sink, attempt, delay, exc
            )
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, max_delay)
            attempt += 1
        except Exception:
            errors.inc()
            raise
        else:
            SINK_WRITE_SECONDS.labels(sink=sink).observe(time.perf_counter() - started)
            return result
