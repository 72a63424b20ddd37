"""Calls that share round trips: what waits goes together, every caller gets its own answer or
the batch's error, and a cancelled caller neither blocks nor is sent."""

from __future__ import annotations

import asyncio

import pytest

from runtime.batched_calls import BatchedCalls


class Recorder:
    """A `send` that records each batch and, while `gate` is clear, holds it on its way."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_with: Exception | None = None

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [item * 10 for item in items]


async def test_a_lone_call_goes_at_once_and_gets_its_answer() -> None:
    send = Recorder()
    calls = BatchedCalls(send)
    assert await asyncio.wait_for(calls(4), 1) == 40
    assert send.batches == [[4]]


async def test_calls_made_in_one_turn_go_in_one_batch() -> None:
    send = Recorder()
    calls = BatchedCalls(send)
    answers = await asyncio.gather(*(calls(n) for n in range(5)))
    assert answers == [0, 10, 20, 30, 40]
    assert send.batches == [[0, 1, 2, 3, 4]]


async def test_calls_made_while_a_batch_is_on_its_way_go_together_next() -> None:
    send = Recorder()
    calls = BatchedCalls(send)
    send.gate.clear()
    first = asyncio.ensure_future(calls(1))
    await asyncio.sleep(0)  # the first batch leaves and waits at the gate
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(calls(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    assert send.batches == [[1]], "nothing else leaves while a batch is on its way"
    send.gate.set()
    assert await asyncio.gather(first, *later) == [10, 20, 30, 40]
    assert send.batches == [[1], [2, 3, 4]]


async def test_batches_hold_at_most_max_batch_items_in_order() -> None:
    send = Recorder()
    calls = BatchedCalls(send, max_batch=2)
    answers = await asyncio.gather(*(calls(n) for n in range(5)))
    assert answers == [0, 10, 20, 30, 40]
    assert send.batches == [[0, 1], [2, 3], [4]]


async def test_an_error_reaches_every_call_of_its_batch_and_the_next_batch_still_goes() -> None:
    send = Recorder()
    calls = BatchedCalls(send)
    send.fail_with = ConnectionError("Redis is down")
    results = await asyncio.gather(calls(1), calls(2), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    send.fail_with = None
    assert await calls(3) == 30


async def test_a_caller_cancelled_before_its_batch_left_is_not_sent() -> None:
    send = Recorder()
    calls = BatchedCalls(send)
    send.gate.clear()
    first = asyncio.ensure_future(calls(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(calls(2))
    kept = asyncio.ensure_future(calls(3))
    await asyncio.sleep(0)
    gone.cancel()
    send.gate.set()
    assert list(await asyncio.gather(first, kept)) == [10, 30]
    assert gone.cancelled()
    assert send.batches == [[1], [3]]


async def test_a_caller_cancelled_on_the_way_leaves_the_others_their_answers() -> None:
    send = Recorder()
    calls = BatchedCalls(send)
    send.gate.clear()
    gone = asyncio.ensure_future(calls(1))
    kept = asyncio.ensure_future(calls(2))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gone.cancel()
    send.gate.set()
    assert await kept == 20
    assert gone.cancelled()


async def test_a_send_that_answers_the_wrong_number_of_items_is_an_error() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    calls = BatchedCalls(short)
    with pytest.raises(RuntimeError, match="2 calls were sent, 1 answered"):
        await asyncio.gather(calls(1), calls(2))


def test_max_batch_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        BatchedCalls(Recorder(), max_batch=0)


async def test_a_batch_unanswered_in_time_fails_its_calls_and_the_next_batch_goes() -> None:
    send = Recorder()
    calls = BatchedCalls(send, timeout_s=0.05)
    send.gate.clear()
    with pytest.raises(TimeoutError, match=r"2 calls unanswered after 0\.05 s"):
        await asyncio.gather(calls(1), calls(2))
    send.gate.set()
    assert await asyncio.wait_for(calls(3), 1) == 30


async def test_a_sender_cancelled_before_it_ran_does_not_hold_later_calls() -> None:
    send = Recorder()
    calls = BatchedCalls(send)
    first = asyncio.ensure_future(calls(1))
    await asyncio.sleep(0)  # the call is waiting and its sender is made, not yet run
    sender = calls._sender
    assert sender is not None
    sender.cancel()
    first.cancel()
    await asyncio.gather(first, sender, return_exceptions=True)
    assert await asyncio.wait_for(calls(2), 1) == 20
