"""The gateway's ai.responses reader hands each answer to every call waiting for its id."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from runtime.settings import Settings
from schemas import encode
from schemas.events import AIResponse, ResponseStatus
from scribe.gateway.ai_responses import ResponseWaiter


@dataclass
class _Record:
    value: bytes | None
    partition: int = 0
    offset: int = 0


def _waiter() -> ResponseWaiter:
    settings = Settings(
        kafka_url="kafka://127.0.0.1:1",
        database_url="postgresql://127.0.0.1:1/none",
        redis_url="redis://127.0.0.1:1",
    )
    return ResponseWaiter(settings.require())


def _answer(request_id: str) -> _Record:
    response = AIResponse(
        request_id=request_id,
        user_id="u-1",
        status=ResponseStatus.OK,
        completed_at=datetime.now(UTC),
        output="hi",
    )
    return _Record(encode(response))


async def test_a_duplicate_shares_the_answer_even_after_the_first_call_gave_up() -> None:
    waiter = _waiter()
    _first, first_is_new = waiter.expect("r-1")
    second, second_is_new = waiter.expect("r-1")
    assert (first_is_new, second_is_new) == (True, False)
    waiter.forget("r-1")  # the first call timed out; the second still waits
    waiter._answer(_answer("r-1"))
    assert (await asyncio.wait_for(second, 1)).output == "hi"
    waiter._answer(_answer("r-2"))  # nobody waits: skipped
    waiter._answer(_Record(b"not json"))  # unreadable: skipped, logged
    _again, again_is_new = waiter.expect("r-1")  # answered, so a new call waits afresh
    assert again_is_new
    waiter.forget("r-1")  # its only caller gave up: nothing left waiting
    assert not waiter._waiting
