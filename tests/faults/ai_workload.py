"""AI requests for a provider fault test: published in phases around the fault, then every
request's answer on ai.responses, usage event on usage.events and ledger row in PostgreSQL are
counted per request id. What must be true is computed from what was published."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import httpx

from devkit.harness import Record, read_until
from schemas import decode, encode
from schemas.events import AIRequest, AIResponse, ResponseStatus
from schemas.examples import example
from tests.faults.observe import (
    Outcome,
    Outgoing,
    dead_letters,
    dead_letters_of_valid,
    eventually,
    publish_raw,
    usage_totals,
)
from topics.catalog import AI_REQUESTS, AI_RESPONSES, USAGE_EVENTS

USERS_PER_RUN = 8
PRIORITIES = ("normal", "high", "urgent")
REQUEST_ID = re.compile(rb'"request_id":"([^"]+)"')


def request_id_of(value: bytes | None) -> str | None:
    match = REQUEST_ID.search(value or b"")
    return match.group(1).decode() if match else None


class ProviderSimulator:
    """The stack's provider simulator, driven over its control API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rules(self, *rules: dict[str, Any]) -> None:
        httpx.post(f"{self.url}/_sim/rules", json={"rules": list(rules)}).raise_for_status()

    def configure(self, **settings: float) -> None:
        httpx.post(f"{self.url}/_sim/config", json=settings).raise_for_status()

    def statuses(self, tag: str) -> Counter[int]:
        calls = httpx.get(f"{self.url}/_sim/calls", timeout=30).json()
        return Counter(c["status"] for c in calls if c["prompt_tag"] == tag)


@dataclass
class AiLoad:
    fault: str
    kafka_url: str
    marker: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    requests: dict[str, AIRequest] = field(default_factory=dict)
    invalid: set[bytes] = field(default_factory=set)
    _counter: Iterator[int] = field(default_factory=lambda: iter(range(10**9)))

    @property
    def users(self) -> list[str]:
        return [f"{self.fault}-{self.marker}-{u}" for u in range(USERS_PER_RUN)]

    def batch(self, count: int, *, invalid: int = 0) -> list[Outgoing]:
        """`count` text requests of mixed priority and tier (the simulator finds them by the
        run's tag), and `invalid` messages that are not requests."""
        records: list[Outgoing] = []
        for _ in range(count):
            n = next(self._counter)
            request = example(
                AIRequest,
                request_id=f"req-{self.marker}-{n}",
                user_id=self.users[n % USERS_PER_RUN],
                priority=PRIORITIES[n % len(PRIORITIES)],
                user_tier="premium" if n % 2 else "free",
                prompt=f"Describe room {n} of the keep [tag:{self.marker}]",
            )
            self.requests[request.request_id] = request
            records.append((AI_REQUESTS.name, AI_REQUESTS.key_of(request), encode(request)))
        for _ in range(invalid):
            key = f"bad-{self.marker}-{next(self._counter)}".encode()
            self.invalid.add(key)
            records.append((AI_REQUESTS.name, key, b'{"request_id": "cut off'))
        return records

    async def publish(self, records: list[Outgoing]) -> None:
        await publish_raw(self.kafka_url, records)

    async def _read(self, topic: str, wanted: set[str], timeout: float) -> list[Record]:
        """Records of `topic` for our request ids: until every id in `wanted` is seen, then the
        whole topic once more, so a second copy of anything is counted too."""

        def ours(record: Record) -> bool:
            return request_id_of(record.value) in self.requests

        def seen(kept: list[Record]) -> bool:
            return {request_id_of(r.value) for r in kept} >= wanted

        await read_until(self.kafka_url, topic, done=seen, match=ours, timeout=timeout)
        return await read_until(self.kafka_url, topic, done=lambda _: False, match=ours, timeout=3)

    async def verify(self, db: asyncpg.Connection) -> tuple[Outcome, list[AIResponse]]:
        """Exactly one answer per request; per successful answer exactly one usage event and
        one ledger row (and the rollups agree); nothing for failed ones."""
        answers = [
            decode(r.value or b"", AIResponse)
            for r in await self._read(AI_RESPONSES.name, set(self.requests), timeout=120)
        ]
        answered = Counter(a.request_id for a in answers)
        ok = {a.request_id for a in answers if a.status is ResponseStatus.OK}
        usage = Counter(
            request_id_of(r.value) for r in await self._read(USAGE_EVENTS.name, ok, timeout=60)
        )

        async def ledger_complete() -> bool:
            return (await usage_totals(db, self.users)).rows >= len(ok)

        await eventually(ledger_complete, timeout=60)
        rows = Counter(
            {
                r["request_id"]: r["n"]
                for r in await db.fetch(
                    "SELECT request_id, count(*) AS n FROM usage_events "
                    "WHERE user_id = ANY($1::text[]) GROUP BY request_id",
                    self.users,
                )
            }
        )
        totals = await usage_totals(db, self.users)
        letters = await dead_letters(self.kafka_url, AI_REQUESTS, self.invalid)
        valid_letters = await dead_letters_of_valid(
            self.kafka_url, [(AI_REQUESTS, {AI_REQUESTS.key_of(r) for r in self.requests.values()})]
        )
        reflected = sum(
            1
            for request_id in self.requests
            if answered[request_id]
            and (request_id not in ok or (usage[request_id] and rows[request_id]))
        )
        failed = set(self.requests) - ok
        duplicated = (
            sum(n - 1 for n in answered.values() if n > 1)
            + sum(n - 1 for n in usage.values() if n > 1)
            + sum(n - 1 for n in rows.values() if n > 1)
            + sum(usage[r] + rows[r] for r in failed)  # usage counted for a failed request
            + (totals.daily_requests - totals.rows)
            + (totals.monthly_requests - totals.rows)
        )
        letter_keys = {r.key for r in letters}
        outcome = Outcome(
            self.fault,
            valid_sent=len(self.requests),
            reflected=reflected,
            duplicated=duplicated,
            invalid_sent=len(self.invalid),
            dead_lettered=len(letter_keys),
            dead_letter_copies=len(letters) - len(letter_keys),
            valid_dead_lettered=len(valid_letters),
        )
        answered_cost = sum(
            (a.cost_usd or Decimal(0) for a in answers if a.status is ResponseStatus.OK),
            Decimal(0),
        )
        assert totals.daily_cost == totals.monthly_cost == answered_cost, (
            f"cost: daily {totals.daily_cost}, monthly {totals.monthly_cost}, "
            f"answered {answered_cost}"
        )
        return outcome, answers
