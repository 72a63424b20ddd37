"""The usage flow run in-process (runtime.testing): events priced exactly, bad input
dead-lettered in offset order, offsets committed only after the ledger sink wrote the batch."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import TopicPartition

from agents.usage.flow import USAGE, UsageBatch, declare
from agents.usage.pricing import UsageLimits
from runtime.testing import DeadLetterList, ListConsumer, ListSink, records, run_flow
from schemas import encode
from schemas.events import UsageEvent
from schemas.examples import example
from topics.catalog import USAGE_EVENTS

LIMITS = UsageLimits(max_tokens_per_event=1_000_000)


def usage(user: str, **overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "user_id": user,
        "occurred_at": datetime.now(UTC),
        "service": "gemini",
        "model": "gemini-2.5-flash",
        "cost_usd": None,
        "free_tier": False,
        "images": 0,
    }
    return encode(example(UsageEvent, **(fields | overrides)))


async def test_costs_add_up_exactly_and_bad_input_is_dead_lettered_in_offset_order() -> None:
    values = [
        usage("ana", input_tokens=1000, output_tokens=2000),  # 0.0053
        b'{"not": "a usage event"',
        usage("ana", input_tokens=1, output_tokens=1),  # 0.0000028
        usage("bo", model="someone/new-model"),  # not in the catalog, no cost given
        None,
        usage("bo", model="someone/new-model", cost_usd=Decimal("0.1")),
        usage("bo", model="someone/new-model", cost_usd=Decimal("0.2")),
    ]
    ledger: ListSink[UsageBatch] = ListSink()
    dead = DeadLetterList()
    consumer = ListConsumer(records(USAGE_EVENTS.name, values))

    await run_flow(declare(ledger, dead, LIMITS), consumer)

    totals: dict[str, Decimal] = defaultdict(Decimal)
    for batch in ledger.batches:
        for item in batch:
            totals[item.event.event.user_id] += item.event.cost_usd
    assert totals == {"ana": Decimal("0.0053028"), "bo": Decimal("0.3")}
    assert [(d.record.offset, d.kind) for d in dead.letters] == [
        (1, "json"),
        (3, "unpriced"),
        (4, "json"),
    ]
    assert dead.letters[0].record.value == values[1]  # the original bytes
    assert consumer.committed == {TopicPartition(USAGE_EVENTS.name, 0): len(values)}
    assert ledger.closed


async def test_an_event_id_read_twice_reaches_the_ledger_with_that_id_twice() -> None:
    """The ledger's key is the event id: the flow hands both copies over, the sink keeps one."""
    value = usage("ana", input_tokens=10, output_tokens=10)
    ledger: ListSink[UsageBatch] = ListSink()
    consumer = ListConsumer(records(USAGE_EVENTS.name, [value, value]))

    await run_flow(declare(ledger, DeadLetterList(), LIMITS), consumer)

    ids = [item.event.event.event_id for batch in ledger.batches for item in batch]
    assert len(ids) == 2
    assert len(set(ids)) == 1


async def test_a_ledger_write_that_fails_commits_nothing() -> None:
    class Down(ListSink[UsageBatch]):
        async def write(self, batch: UsageBatch) -> None:
            raise RuntimeError("the transaction did not commit")

    consumer = ListConsumer(records(USAGE_EVENTS.name, [usage("ana", input_tokens=1)]))
    with pytest.raises(RuntimeError, match="did not commit"):
        await run_flow(declare(Down(), DeadLetterList(), LIMITS), consumer)
    assert consumer.committed == {}


def test_the_usage_group_is_named_after_the_flow() -> None:
    assert USAGE.group_of("scribe") == "scribe.usage"
