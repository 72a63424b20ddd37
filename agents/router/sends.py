"""What decide and settle have sent and the broker has not acknowledged yet."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from agents.router.decide import Emit

log = logging.getLogger(__name__)

# Hands a message to the producer; what it returns is awaited for the acknowledgement.
Enqueue = Callable[[Emit], Awaitable[Awaitable[Any]]]
Publish = Callable[[list[Emit]], Awaitable[None]]


class SendsInFlight:
    """A sink hands its messages to the producer and goes on; the flow's flush waits for the
    broker's acknowledgement before the batch's offsets are committed. So the next batch is
    decided while this one's acknowledgement is on its way, a broker round trip off every
    batch. What failed is sent again with `publish` (which waits and retries): a message sent
    twice is answered once, as after any redelivery."""

    def __init__(self, enqueue: Enqueue, publish: Publish) -> None:
        self._enqueue = enqueue
        self._publish = publish
        self._unacknowledged: list[tuple[list[Emit], list[asyncio.Future[Any]]]] = []
        self._flushing = asyncio.Lock()  # the commit behind and a stop may both flush

    def __len__(self) -> int:
        return sum(len(futures) for _, futures in self._unacknowledged)

    async def send(self, emits: list[Emit]) -> None:
        # Enqueueing that fails part way fails the sink's write, which is written again.
        futures: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(await self._enqueue(emit)) for emit in emits
        ]
        self._unacknowledged.append((emits, futures))

    async def flush(self) -> None:
        """Return once every message sent so far is acknowledged."""
        async with self._flushing:
            while self._unacknowledged:
                emits, futures = self._unacknowledged[0]
                if futures:
                    # wait, not gather: a flush cut short by a stop leaves the sends alone.
                    await asyncio.wait(futures)
                failed = [f for f in futures if f.cancelled() or f.exception() is not None]
                if failed:
                    log.warning(
                        "router: %d of %d sends not acknowledged (%r); sending the batch again",
                        len(failed),
                        len(emits),
                        "cancelled" if failed[0].cancelled() else failed[0].exception(),
                    )
                    await self._publish(emits)
                self._unacknowledged.pop(0)
