"""The decide and settle flows' sends: handed to the producer at once, acknowledged by the
flow's flush, and a batch whose acknowledgement failed sent again."""

from __future__ import annotations

import asyncio
from typing import Any

from agents.router.decide import Emit
from agents.router.sends import SendsInFlight
from topics.catalog import AI_RESPONSES


def emits(*values: bytes) -> list[Emit]:
    return [Emit(AI_RESPONSES, b"user", value) for value in values]


class Producer:
    """Hands out one future per message; the test acknowledges or fails them."""

    def __init__(self) -> None:
        self.futures: dict[bytes, asyncio.Future[Any]] = {}
        self.republished: list[list[bytes]] = []

    async def enqueue(self, emit: Emit) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures[emit.value] = future
        return future

    async def publish(self, batch: list[Emit]) -> None:
        self.republished.append([e.value for e in batch])


async def test_send_returns_at_once_and_flush_waits_for_every_acknowledgement() -> None:
    producer = Producer()
    sends = SendsInFlight(producer.enqueue, producer.publish)
    await sends.send(emits(b"a", b"b"))
    await sends.send(emits(b"c"))
    assert len(sends) == 3
    flushing = asyncio.create_task(sends.flush())
    producer.futures[b"a"].set_result(None)
    producer.futures[b"c"].set_result(None)
    await asyncio.sleep(0.01)
    assert not flushing.done(), "b is not acknowledged yet"
    producer.futures[b"b"].set_result(None)
    await asyncio.wait_for(flushing, 1)
    assert len(sends) == 0
    assert producer.republished == []


async def test_a_batch_with_a_failed_send_is_published_again_whole() -> None:
    producer = Producer()
    sends = SendsInFlight(producer.enqueue, producer.publish)
    await sends.send(emits(b"a", b"b"))
    await sends.send(emits(b"c"))
    producer.futures[b"a"].set_result(None)
    producer.futures[b"b"].set_exception(ConnectionError("broker gone"))
    producer.futures[b"c"].set_result(None)
    await sends.flush()
    assert producer.republished == [[b"a", b"b"]]
    assert len(sends) == 0


async def test_two_flushes_at_once_each_wait_for_everything_sent_before() -> None:
    """The commit behind and a stop may flush together: neither returns early."""
    producer = Producer()
    sends = SendsInFlight(producer.enqueue, producer.publish)
    await sends.send(emits(b"a"))
    await sends.send(emits(b"b"))
    first = asyncio.create_task(sends.flush())
    second = asyncio.create_task(sends.flush())
    producer.futures[b"a"].set_result(None)
    await asyncio.sleep(0.01)
    assert not first.done() and not second.done()
    producer.futures[b"b"].set_result(None)
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert len(sends) == 0
