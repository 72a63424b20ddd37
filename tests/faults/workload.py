"""A mixed stream for a fault test: usage events (PostgreSQL), invalidations (Redis) and bad
input (the DLQs), published in phases around the fault. What must be true afterwards is
computed from what was published, never written down by hand."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg
import redis.asyncio as aioredis
from aiokafka.structs import RecordMetadata

from schemas import encode
from schemas.events import CacheInvalidation, UsageEvent
from schemas.examples import example
from scribe.workers import WorkerProcess
from tests.faults.observe import (
    Outcome,
    Outgoing,
    committed_offset,
    dead_letters,
    eventually,
    metric_total,
    publish_raw,
    usage_totals,
)
from topics.catalog import CACHE_INVALIDATIONS, USAGE_EVENTS, TopicSpec

USERS_PER_RUN = 8
INVALIDATIONS_EVERY = 20  # one invalidation per this many usage events


@dataclass
class Workload:
    fault: str
    kafka_url: str
    marker: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    usage: dict[str, UsageEvent] = field(default_factory=dict)
    invalidations: list[CacheInvalidation] = field(default_factory=list)
    invalid: dict[str, set[bytes]] = field(default_factory=dict)  # topic -> keys
    sent: list[tuple[Outgoing, RecordMetadata]] = field(default_factory=list)
    _counter: Iterator[int] = field(default_factory=lambda: iter(range(10**9)))

    @property
    def users(self) -> list[str]:
        return [f"{self.fault}-{self.marker}-{u}" for u in range(USERS_PER_RUN)]

    @property
    def kept_key(self) -> str:
        return f"fault:{self.marker}:kept"

    def doomed_keys(self) -> list[str]:
        return [k for e in self.invalidations for k in e.keys]

    def _usage(self) -> UsageEvent:
        n = next(self._counter)
        return example(
            UsageEvent,
            event_id=f"use-{self.marker}-{n}",
            user_id=self.users[n % USERS_PER_RUN],
            input_tokens=n % 997,
            output_tokens=(7 * n) % 1009,
            cost_usd=Decimal(n % 1000 + 1).scaleb(-12) + Decimal(n % 7),
        )

    def batch(
        self, usage: int, *, invalid: int = 0, duplicates: int = 0
    ) -> tuple[list[Outgoing], list[CacheInvalidation]]:
        """`usage` new usage events, an invalidation per 20 of them, `invalid` bad messages on
        each of both topics, and `duplicates` usage events published a second time."""
        records: list[Outgoing] = []
        invalidations = []
        for _ in range(usage):
            event = self._usage()
            self.usage[event.event_id] = event
            records.append((USAGE_EVENTS.name, USAGE_EVENTS.key_of(event), encode(event)))
            if len(self.usage) % INVALIDATIONS_EVERY == 0:
                n = next(self._counter)
                inv = example(
                    CacheInvalidation,
                    id=f"inv-{self.marker}-{n}",
                    keys=[f"fault:{self.marker}:{n}:a", f"fault:{self.marker}:{n}:b"],
                )
                invalidations.append(inv)
                records.append(
                    (CACHE_INVALIDATIONS.name, CACHE_INVALIDATIONS.key_of(inv), encode(inv))
                )
        for again in list(self.usage.values())[:duplicates]:
            records.append((USAGE_EVENTS.name, USAGE_EVENTS.key_of(again), encode(again)))
        for spec in (USAGE_EVENTS, CACHE_INVALIDATIONS):
            for _ in range(invalid):
                key = f"bad-{self.marker}-{next(self._counter)}".encode()
                self.invalid.setdefault(spec.name, set()).add(key)
                records.append((spec.name, key, b'{"truncated": '))
        self.invalidations.extend(invalidations)
        return records, invalidations

    async def publish(
        self, records: list[Outgoing], invalidations: list[CacheInvalidation]
    ) -> list[RecordMetadata]:
        """Publish a batch from `batch()`; the invalidations' keys are cached beforehand."""
        sent = await publish_raw(self.kafka_url, records)
        self.sent.extend(zip(records, sent, strict=True))
        return sent

    async def verify(
        self,
        db: asyncpg.Connection,
        cache: aioredis.Redis,
        worker: WorkerProcess,
        invalidations_counted_before: float | None,
    ) -> Outcome:
        """Wait for the pipeline to catch up, then measure what was lost and what doubled."""

        async def ledger_complete() -> bool:
            return (await usage_totals(db, self.users)).rows >= len(self.usage)

        async def keys_gone() -> bool:
            return bool(await cache.exists(*self.doomed_keys()) == 0)

        await eventually(ledger_complete, timeout=120)
        await eventually(keys_gone, timeout=60)
        for spec in (USAGE_EVENTS, CACHE_INVALIDATIONS):
            assert await self.caught_up(spec, worker.app_id), (
                f"{spec.name}: the worker's group did not move past the published records\n"
                f"{worker.log_tail()}"
            )
        totals = await usage_totals(db, self.users)
        expected_cost = sum((e.cost_usd or Decimal(0) for e in self.usage.values()), Decimal(0))
        remaining = int(await cache.exists(*self.doomed_keys()))
        assert await cache.get(self.kept_key) == b"cached"

        letters = []
        for name, keys in self.invalid.items():
            spec = USAGE_EVENTS if name == USAGE_EVENTS.name else CACHE_INVALIDATIONS
            letters.extend(await dead_letters(self.kafka_url, spec, keys))
        letter_keys = {r.key for r in letters}

        unlinked_twice = 0
        if invalidations_counted_before is not None:
            counted = metric_total(worker, "scribe_invalidations_total", sink="redis")
            unlinked_twice = int(counted - invalidations_counted_before) - len(self.doomed_keys())
        outcome = Outcome(
            self.fault,
            valid_sent=len(self.usage) + len(self.invalidations),
            reflected=totals.rows
            + len(self.invalidations)
            - _events_with_keys_left(self.invalidations, remaining),
            duplicated=(totals.daily_requests - totals.rows)
            + (totals.monthly_requests - totals.rows)
            + max(unlinked_twice, 0),
            invalid_sent=sum(len(k) for k in self.invalid.values()),
            dead_lettered=len(letter_keys),
            dead_letter_copies=len(letters) - len(letter_keys),
        )
        print(outcome.line())
        assert totals.daily_cost == totals.monthly_cost == expected_cost, (
            f"cost: daily {totals.daily_cost}, monthly {totals.monthly_cost}, "
            f"published {expected_cost}"
        )
        return outcome

    async def caught_up(self, spec: TopicSpec, group: str) -> bool:
        """The group's committed offset is past the last record published on each partition."""
        last: dict[int, int] = {}
        for (topic, _, _), meta in self.sent:
            if topic == spec.name:
                last[meta.partition] = max(last.get(meta.partition, -1), meta.offset)

        async def past_all() -> bool:
            for partition, offset in last.items():
                committed = await committed_offset(self.kafka_url, group, spec.name, partition)
                if committed is None or committed <= offset:
                    return False
            return True

        return await eventually(past_all, timeout=60)


def _events_with_keys_left(invalidations: list[CacheInvalidation], remaining: int) -> int:
    """Upper bound on invalidations not applied: each left key may be a different event."""
    return min(remaining, len(invalidations))


def first_offsets(sent: list[RecordMetadata], topic: str) -> dict[int, int]:
    """The first offset per partition among `sent` records of `topic`."""
    first: dict[int, int] = {}
    for meta in sent:
        if meta.topic == topic:
            first[meta.partition] = min(first.get(meta.partition, meta.offset), meta.offset)
    return first
