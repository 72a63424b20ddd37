"""The router's intake run in-process (runtime.testing): requests split by priority, keyed by
user, bad input dead-lettered, offsets committed after the split batch is published."""

from __future__ import annotations

from aiokafka import TopicPartition

from agents.router.decide import Emit
from agents.router.splitter import INTAKE, declare
from runtime.testing import DeadLetterList, ListConsumer, records, run_flow
from schemas import encode
from schemas.events import AIRequest
from schemas.examples import example
from topics.catalog import AI_REQUESTS, AI_REQUESTS_HELD, AI_REQUESTS_READY


async def test_requests_are_split_by_priority_and_bad_input_dead_lettered() -> None:
    urgent = encode(example(AIRequest, user_id="u-1", priority="urgent"))
    background = encode(example(AIRequest, user_id="u-2", priority="background"))
    published: list[list[Emit]] = []
    dead = DeadLetterList()

    async def publish(emits: list[Emit]) -> None:
        published.append(emits)

    consumer = ListConsumer(records(AI_REQUESTS.name, [urgent, b"{}", background]))
    await run_flow(declare(publish, dead), consumer)

    emits = [e for batch in published for e in batch]
    assert [(e.spec, e.key, e.value) for e in emits] == [
        (AI_REQUESTS_READY, b"u-1", urgent),
        (AI_REQUESTS_HELD, b"u-2", background),
    ]
    assert [(d.record.offset, d.kind) for d in dead.letters] == [(1, "schema")]
    assert consumer.committed == {TopicPartition(AI_REQUESTS.name, 0): 3}


def test_the_intake_group_is_named_after_the_flow() -> None:
    assert INTAKE.group_of("scribe") == "scribe.router-intake"
