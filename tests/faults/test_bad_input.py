"""The bad-input corpus through a real worker on every input topic: every invalid message lands
in the topic's .dlq with its reason, every valid one is processed exactly once, the worker stays
alive and the dead-letter metric counts what the topics hold."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka.structs import RecordMetadata

from devkit.harness import Record, WorkerProcess
from schemas import DecodeError, decode
from schemas.events import CacheInvalidation, UsageEvent
from tests.faults.conftest import FaultStack
from tests.faults.corpus import VALID, Case, corpus
from tests.faults.observe import (
    Outcome,
    committed_offset,
    dead_letter_counts,
    dead_letters,
    eventually,
    flow_failures,
    log_size,
    publish_raw,
    usage_totals,
)
from topics.catalog import CACHE_INVALIDATIONS, INPUT_TOPICS, USAGE_EVENTS, TopicSpec
from topics.dlq import (
    H_ERROR,
    H_ERROR_KIND,
    H_ORIGINAL_SIZE,
    H_SOURCE_OFFSET,
    H_SOURCE_TOPIC,
    MAX_ORIGINAL_BYTES,
)

pytestmark = pytest.mark.faults

FLOW_REFUSALS = ("unpriced", "implausible")  # valid events a flow refuses after decoding


@pytest.mark.parametrize("spec", INPUT_TOPICS, ids=lambda s: s.name)
def test_the_corpus_means_what_it_says(spec: TopicSpec) -> None:
    """Offline: each case decodes, or fails with the kind the pipeline must report."""
    for case in corpus(spec, "offline"):
        if case.value is None:
            continue
        try:
            decode(case.value, spec.model)
            outcome = VALID if case.expected in (VALID, *FLOW_REFUSALS) else "decoded"
            assert outcome == VALID, f"{case.name} decoded but should fail ({case.expected})"
        except DecodeError as error:
            assert error.kind == case.expected, f"{case.name}: {error.kind}: {error.reason}"


def _key(marker: str, case: Case) -> bytes:
    return f"{marker}:{case.name}".encode()


async def test_corpus_on_every_input_topic(
    fault_stack: FaultStack, fault_worker: WorkerProcess
) -> None:
    env = fault_stack.env()
    kafka_url = env["SCRIBE_KAFKA_URL"]
    marker = uuid.uuid4().hex[:10]
    cases = {spec: corpus(spec, marker) for spec in INPUT_TOPICS}

    invalidations = [c.event for c in cases[CACHE_INVALIDATIONS] if c.expected == VALID]
    doomed = {k for e in invalidations if isinstance(e, CacheInvalidation) for k in e.keys}
    kept = f"corpus:{marker}:kept"
    cache = aioredis.from_url(env["SCRIBE_REDIS_URL"])
    db = await asyncpg.connect(env["SCRIBE_DATABASE_URL"])
    try:
        for key in (*doomed, kept):
            await cache.set(key, b"cached")
        # The corpus's own reasons: a flow may also refuse a schema-valid case on its rules
        # (a tick for a world that does not exist yet), which is not what is counted here.
        kinds = {c.expected for cs in cases.values() for c in cs if c.expected != VALID}
        metrics_before = dead_letter_counts(fault_worker, kinds)
        log_start = log_size(fault_worker)

        sent = await publish_raw(
            kafka_url,
            [(spec.name, _key(marker, c), c.value) for spec, cs in cases.items() for c in cs],
        )
        where = dict(
            zip(
                [(spec.name, _key(marker, c)) for spec, cs in cases.items() for c in cs],
                sent,
                strict=True,
            )
        )

        outcomes = []
        for spec, topic_cases in cases.items():
            invalid = {_key(marker, c): c for c in topic_cases if c.expected != VALID}
            letters = await _check_dead_letters(kafka_url, spec, invalid, where, fault_worker)
            valid = [c for c in topic_cases if c.expected == VALID]
            for case in valid:  # processed: the worker's group moved past it
                origin = where[(spec.name, _key(marker, case))]
                assert await _moved_past(kafka_url, fault_worker.app_id, origin), (
                    f"{spec.name}/{case.name} not processed\n{fault_worker.log_tail()}"
                )
            outcomes.append((spec, valid, invalid, letters))

        # Usage: each valid event id exactly once in the ledger and the rollups.
        usage_cases = [c for c in cases[USAGE_EVENTS] if c.expected == VALID]
        unique = {c.event.event_id: c.event for c in usage_cases if isinstance(c.event, UsageEvent)}
        user = f"corpus-{marker}"

        async def all_stored() -> bool:
            return (await usage_totals(db, [user])).rows >= len(unique)

        await eventually(all_stored)
        totals = await usage_totals(db, [user])
        expected_cost = sum((e.cost_usd or Decimal(0) for e in unique.values()), Decimal(0))
        assert totals.rows == len(unique)
        assert totals.daily_requests == totals.monthly_requests == len(unique)
        assert totals.daily_cost == totals.monthly_cost == expected_cost

        # Invalidation: the keys named by valid events are gone, the others stay.
        async def keys_gone() -> bool:
            return bool(await cache.exists(*doomed) == 0)

        assert await eventually(keys_gone), fault_worker.log_tail()
        assert await cache.get(kept) == b"cached"

        assert fault_worker.alive(), fault_worker.log_tail()
        assert flow_failures(fault_worker, log_start) == []
        metrics_after = dead_letter_counts(fault_worker, kinds)
        for spec, _valid, invalid, letters in outcomes:
            counted = metrics_after.get(spec.name, 0) - metrics_before.get(spec.name, 0)
            assert counted == len(invalid) == len(letters), spec.name
        for spec, valid, invalid, letters in outcomes:
            reflected = len(unique) if spec is USAGE_EVENTS else len(valid)
            row = Outcome(
                f"bad-input corpus on {spec.name}",
                valid_sent=reflected,
                reflected=reflected,
                duplicated=totals.daily_requests - totals.rows if spec is USAGE_EVENTS else 0,
                invalid_sent=len(invalid),
                dead_lettered=len({r.key for r in letters}),
                dead_letter_copies=len(letters) - len({r.key for r in letters}),
            )
            print(row.line())
    finally:
        await db.close()
        await cache.aclose()


async def _check_dead_letters(
    kafka_url: str,
    spec: TopicSpec,
    invalid: dict[bytes, Case],
    where: dict[tuple[str, bytes], RecordMetadata],
    worker: WorkerProcess,
) -> list[Record]:
    """Each invalid case is in the DLQ with its original bytes, its reason and its origin."""
    letters = await dead_letters(kafka_url, spec, set(invalid))
    found = {r.key for r in letters}
    assert found == set(invalid), (
        f"{spec.name}: missing dead letters {set(invalid) - found}\n{worker.log_tail()}"
    )
    for record in letters:
        assert record.key is not None
        case = invalid[record.key]
        assert case.value is None or record.value == case.value[:MAX_ORIGINAL_BYTES]
        if case.value is not None and len(case.value) > MAX_ORIGINAL_BYTES:
            assert record.headers[H_ORIGINAL_SIZE] == str(len(case.value)).encode()
        assert record.headers[H_ERROR_KIND] == case.expected.encode(), case.name
        assert record.headers[H_ERROR], case.name
        assert record.headers[H_SOURCE_TOPIC] == spec.name.encode()
        origin = where[(spec.name, record.key)]
        assert record.headers[H_SOURCE_OFFSET] == str(origin.offset).encode()
    return letters


async def _moved_past(kafka_url: str, group: str, origin: RecordMetadata) -> bool:
    async def committed_beyond() -> bool:
        committed = await committed_offset(kafka_url, group, origin.topic, origin.partition)
        return committed is not None and committed > origin.offset

    return await eventually(committed_beyond)
