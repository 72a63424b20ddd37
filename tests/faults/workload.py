"""A mixed stream for a fault test: usage events (PostgreSQL), invalidations (Redis, and with
`cdn` the CDN too) and bad input (the DLQs), published in phases around the fault. What must be
true afterwards is computed from what was published, never written down by hand."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg
import httpx
import redis.asyncio as aioredis
from aiokafka.structs import RecordMetadata

from devkit.harness import WorkerProcess
from schemas import encode
from schemas.events import CacheInvalidation, UsageEvent
from schemas.examples import example
from tests.faults.observe import (
    Outcome,
    Outgoing,
    committed_offset,
    dead_letters,
    dead_letters_of_valid,
    eventually,
    metric_total,
    publish_raw,
    usage_totals,
)
from topics.catalog import CACHE_INVALIDATIONS, USAGE_EVENTS, TopicSpec

USERS_PER_RUN = 8
INVALIDATIONS_EVERY = 20  # one invalidation per this many usage events
CDN_HOST = "cdn.example"

PurgeRecord = tuple[str, str, str]  # provider, kind (url|tag), target as the API received it


def expected_purges(invalidation: CacheInvalidation, providers: list[str]) -> set[PurgeRecord]:
    """What each provider records for an invalidation's URLs and tags: Fastly purges a URL by
    host/path (no scheme), Cloudflare by the whole URL."""
    expected: set[PurgeRecord] = set()
    for provider in providers:
        for url in invalidation.urls:
            target = url.split("://", 1)[1] if provider == "fastly" else url
            expected.add((provider, "url", target))
        expected.update((provider, "tag", tag) for tag in invalidation.tags)
    return expected


@dataclass
class Workload:
    fault: str
    kafka_url: str
    cdn: bool = False  # invalidations also carry a URL and a tag (surrogate key) to purge
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
                cdn_targets = (
                    {
                        "urls": [f"https://{CDN_HOST}/fault/{self.marker}/{n}.json"],
                        "tags": [f"fault-{self.marker}-{n}"],
                    }
                    if self.cdn
                    else {}
                )
                inv = example(
                    CacheInvalidation,
                    id=f"inv-{self.marker}-{n}",
                    keys=[f"fault:{self.marker}:{n}:a", f"fault:{self.marker}:{n}:b"],
                    **cdn_targets,
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
        cdn: CdnSimulator | None = None,
    ) -> Outcome:
        """Wait for the pipeline to catch up, then measure what was lost and what doubled. An
        invalidation is reflected when all its keys are gone from Redis and, with `cdn`, every
        provider purged its URLs and tags; a purge recorded twice counts as duplicated."""

        async def ledger_complete() -> bool:
            return (await usage_totals(db, self.users)).rows >= len(self.usage)

        async def keys_gone() -> bool:
            return bool(await cache.exists(*self.doomed_keys()) == 0)

        await eventually(ledger_complete, timeout=120)
        await eventually(keys_gone, timeout=60)
        purges: Counter[PurgeRecord] = Counter()
        if cdn is not None:

            async def all_purged() -> bool:
                purges.clear()
                purges.update(await cdn.purges(self.marker))
                return all(set(purges) >= cdn.expected(e) for e in self.invalidations)

            await eventually(all_purged, timeout=90)
        for spec in (USAGE_EVENTS, CACHE_INVALIDATIONS):
            assert await self.caught_up(spec, worker.app_id), (
                f"{spec.name}: the worker's group did not move past the published records\n"
                f"{worker.log_tail()}"
            )
        totals = await usage_totals(db, self.users)
        expected_cost = sum((e.cost_usd or Decimal(0) for e in self.usage.values()), Decimal(0))
        left = {k for k in self.doomed_keys() if await cache.exists(k)}
        unapplied = [
            e
            for e in self.invalidations
            if left.intersection(e.keys) or (cdn is not None and not set(purges) >= cdn.expected(e))
        ]
        purged_twice = sum(count - 1 for count in purges.values() if count > 1)
        assert await cache.get(self.kept_key) == b"cached"
        valid_letters = await dead_letters_of_valid(self.kafka_url, self._valid_keys())

        letters = []
        for name, keys in self.invalid.items():
            spec = USAGE_EVENTS if name == USAGE_EVENTS.name else CACHE_INVALIDATIONS
            letters.extend(await dead_letters(self.kafka_url, spec, keys))
        letter_keys = {r.key for r in letters}

        unlinked_twice = 0
        if invalidations_counted_before is not None:
            counted = keys_unlinked(worker)
            unlinked_twice = int(counted - invalidations_counted_before) - len(self.doomed_keys())
        if cdn is not None:
            print(
                f"{self.fault}: {len(purges)} CDN purges of {len(self.invalidations)} "
                f"invalidations' URLs and tags at {', '.join(cdn.providers)}; "
                f"{purged_twice} purged more than once"
            )
        outcome = Outcome(
            self.fault,
            valid_sent=len(self.usage) + len(self.invalidations),
            reflected=totals.rows + len(self.invalidations) - len(unapplied),
            duplicated=(totals.daily_requests - totals.rows)
            + (totals.monthly_requests - totals.rows)
            + max(unlinked_twice, 0)
            + purged_twice,
            invalid_sent=sum(len(k) for k in self.invalid.values()),
            dead_lettered=len(letter_keys),
            dead_letter_copies=len(letters) - len(letter_keys),
            valid_dead_lettered=len(valid_letters),
        )
        print(outcome.line())
        assert totals.daily_cost == totals.monthly_cost == expected_cost, (
            f"cost: daily {totals.daily_cost}, monthly {totals.monthly_cost}, "
            f"published {expected_cost}"
        )
        return outcome

    def _valid_keys(self) -> list[tuple[TopicSpec, set[bytes]]]:
        """The record keys of the valid events, by topic (bad input has keys of its own)."""
        return [
            (USAGE_EVENTS, {USAGE_EVENTS.key_of(e) for e in self.usage.values()}),
            (CACHE_INVALIDATIONS, {CACHE_INVALIDATIONS.key_of(e) for e in self.invalidations}),
        ]

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


def keys_unlinked(worker: WorkerProcess) -> float:
    """Keys the worker's invalidation flow removed from Redis (tags and patterns not counted)."""
    return metric_total(worker, "scribe_invalidations_total", sink="redis", kind="key")


@dataclass(frozen=True)
class CdnSimulator:
    """The CDN simulator's record of successful purges, and the providers the worker uses."""

    url: str
    providers: list[str]

    async def purges(self, marker: str) -> Counter[PurgeRecord]:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            answer = (await http.get("/_sim/purges", params={"contains": marker})).json()
        return Counter((p["provider"], p["kind"], p["target"]) for p in answer["purges"])

    def expected(self, invalidation: CacheInvalidation) -> set[PurgeRecord]:
        return expected_purges(invalidation, self.providers)


def first_offsets(sent: list[RecordMetadata], topic: str) -> dict[int, int]:
    """The first offset per partition among `sent` records of `topic`."""
    first: dict[int, int] = {}
    for meta in sent:
        if meta.topic == topic:
            first[meta.partition] = min(first.get(meta.partition, meta.offset), meta.offset)
    return first
