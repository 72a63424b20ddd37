"""Calls that share round trips: calls made while a batch is on its way wait, and go together in
the next one.

A call made on an idle event loop goes in the next loop turn, with any made in the same turn; no
timer holds it back. Under load, batches grow with the load, so each round trip (and its
socket write, the largest CPU cost of a small Redis command here) carries more calls.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Send = Callable[[list[T]], Awaitable[list[R]]]


class BatchedCalls(Generic[T, R]):
    """`await calls(item)` is `(await send([item, ...]))[its index]`, with the items of every
    call made while the previous batch was on its way. `send` answers a batch with one result
    per item, in order; when it raises, every call of that batch raises the same error. One
    batch is on its way at a time, with at most `max_batch` items. A batch not answered within
    `timeout_s` fails with `TimeoutError` (an `OSError`, as a lost connection's is), so one
    stuck round trip cannot hold every later call."""

    def __init__(self, send: Send[T, R], max_batch: int = 256, timeout_s: float = 5.0) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._send = send
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._waiting: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        # A sender cancelled before it ran (its loop shutting down) never cleared itself.
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_while_waiting())
        return await future

    async def _send_while_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._next_batch()
                if batch:
                    await self._send_one(batch)
        finally:
            self._sender = None
            # Only a cancelled sender (the loop shutting down) leaves calls behind.
            while self._waiting:
                _, future = self._waiting.popleft()
                future.cancel()

    def _next_batch(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        while self._waiting and len(batch) < self.max_batch:
            item, future = self._waiting.popleft()
            if not future.done():  # a caller cancelled before its batch left: skip it
                batch.append((item, future))
        return batch

    async def _send_one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        limit = asyncio.timeout(self.timeout_s)
        try:
            async with limit:
                results = await self._send([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(batch)} calls were sent, {len(results)} answered")
        except Exception as error:
            failure = error
            if limit.expired():
                failure = TimeoutError(f"{len(batch)} calls unanswered after {self.timeout_s} s")
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        except BaseException:  # cancelled, or the process is ending: nobody will answer them
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
