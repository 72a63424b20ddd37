"""The router's decide and settle steps, flows on the runtime with each user's state in Redis
(`agents.router.ledger_store`); the decisions themselves are `agents.router.decide`.

decide (`router-decide`) reads ai.requests and ai.requests.ready. From ai.requests, urgent,
high and normal requests are decided at once, so they reach their lane in one hop; low and
background go to the held lane (ai.requests.held), which releases them to ai.requests.ready
under its rate cap and window. Everything read from ai.requests.ready is decided. Bad input
goes to ai.requests.dlq with the reason.

settle (`router-settle`) reads the lanes' ai.router.settlements: the response is kept for
replay, the ledger trued up once per request id, and the duplicates that waited answered.

A batch is: read the users' ledgers and the requests' records; decide each user's requests in
offset order; commit every user in one script, which writes a user only if nobody changed
them since the read (else that user is read and decided again); then send. The next batch is
decided while the broker acknowledges them (`agents.router.sends`); a batch's offsets are
committed after its messages are acknowledged. Redis or Kafka down: the batch is written again
after a pause, never committed past. A batch read again is sent again as it was decided the
first time (the records say what each decision sent), and changes no ledger.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar

from aiokafka.errors import KafkaError

from agents.intake import decoder
from agents.router.budget_state import BudgetBook
from agents.router.decide import Emit, Pending, UserOutcome, decide_user, settle_user
from agents.router.ledger_store import Committed, RouterStore, Snapshot, Wait
from agents.router.policy import LANE_OF_PRIORITY, PolicyConfig
from runtime import tracing
from runtime.checkpoint import Flush, nothing_to_flush
from runtime.flow import Flow
from runtime.metrics import PROCESSING_SECONDS
from runtime.source import DeadLetterWriter, Received, Record
from runtime.spec import ConsumerSpec
from schemas.events import AIRequest, Lane, RouterSettlement
from schemas.model_catalog import ModelCatalog
from sinks.redis import RETRYABLE as REDIS_DOWN
from topics.catalog import (
    AI_REQUESTS,
    AI_REQUESTS_HELD,
    AI_REQUESTS_READY,
    AI_RESPONSES,
    AI_ROUTER_SETTLEMENTS,
)

DECIDE = ConsumerSpec(
    "router-decide",
    (AI_REQUESTS.name, AI_REQUESTS_READY.name),
    max_batch=2000,
    poll_ms=20,
    agent_labels={AI_REQUESTS.name: "router", AI_REQUESTS_READY.name: "router"},
)
SETTLE = ConsumerSpec(
    "router-settle",
    (AI_ROUTER_SETTLEMENTS.name,),
    max_batch=2000,
    poll_ms=50,
    # A settlement trues up a reservation that already holds, so Kafka may gather a fetch's
    # worth, for 200 ms at most: a fetch per settlement cost a send and a response to handle
    # on every AI request at low rates. Only a duplicate that waits for the first request's
    # answer waits that much longer.
    fetch_wait_ms=200,
    fetch_min_bytes=64 * 1024,
    agent_labels={AI_ROUTER_SETTLEMENTS.name: "router-settle"},
)
RETRYABLE = (KafkaError, OSError, *REDIS_DOWN)

Publish = Callable[[list[Emit]], Awaitable[None]]
Clock = Callable[[], datetime]
T = TypeVar("T")
X = TypeVar("X")


def utc_now() -> datetime:
    return datetime.now(UTC)


def origin_of(record: Record) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"


@dataclass
class DecideBatch:
    """One batch of the decide flow: requests to pass on to the held lane as they are, and
    the requests to decide, by user, in offset order."""

    held: list[Emit] = field(default_factory=list)
    pending: dict[str, list[Pending]] = field(default_factory=dict)


def held_back(record: Record, request: AIRequest) -> bool:
    """Low and background requests from ai.requests wait in the held lane first."""
    return record.topic == AI_REQUESTS.name and LANE_OF_PRIORITY[request.priority] is Lane.DEFERRED


def sort_requests(batch: list[Received[AIRequest]]) -> DecideBatch:
    sorted_batch = DecideBatch()
    for received in batch:
        request, record = received.event, received.origin
        attributes = {
            "scribe.request_id": request.request_id,
            "scribe.priority": request.priority.value,
        }
        if held_back(record, request):
            sorted_batch.held.append(
                Emit(
                    AI_REQUESTS_HELD,
                    request.user_id.encode(),
                    record.value or b"",
                    tracing.handed_on("router.hold", record.headers, attributes),
                )
            )
            continue
        sorted_batch.pending.setdefault(request.user_id, []).append(
            Pending(
                request,
                origin_of(record),
                tracing.handed_on("router.decide", record.headers, attributes),
            )
        )
    return sorted_batch


async def commit_by_user(
    store: RouterStore,
    todo: dict[str, list[T]],
    request_id: Callable[[T], str],
    outcome_of: Callable[[str, list[T], Snapshot, datetime], tuple[UserOutcome, X]],
    clock: Clock,
) -> list[tuple[tuple[UserOutcome, X], Committed]]:
    """Read the users' ledgers and records, work out each user's outcome, commit them all in
    one script; a user whose state moved since the read is read and worked out again. Returns
    each user's committed outcome with the commit's reply."""
    done: list[tuple[tuple[UserOutcome, X], Committed]] = []
    while todo:
        now = clock()
        ids = [request_id(item) for items in todo.values() for item in items]
        snapshot = await store.read(todo, ids)
        outcomes = [outcome_of(user, items, snapshot, now) for user, items in todo.items()]
        committed = await store.commit(o.commit for o, _ in outcomes if o.writes)
        done.extend(
            (pair, committed)
            for pair in outcomes
            if pair[0].commit.user_id not in committed.conflicts
        )
        todo = {user: todo[user] for user in committed.conflicts}
    return done


class Deciding:
    """The decide flow's sink: decides and commits each user's requests in Redis, then sends
    the decisions (and the held requests); the flow's flush waits for their acknowledgement."""

    def __init__(
        self,
        store: RouterStore,
        budgets: BudgetBook,
        catalog: ModelCatalog,
        config: PolicyConfig,
        publish: Publish,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.store = store
        self.budgets = budgets
        self.catalog = catalog
        self.config = config
        self.publish = publish
        self.clock = clock

    async def write(self, batch: DecideBatch) -> None:
        emits = list(batch.held)
        with PROCESSING_SECONDS.labels(agent="router").time():
            emits.extend(await self.decide(batch.pending))
        if emits:
            await self.publish(emits)

    async def decide(self, pending: dict[str, list[Pending]]) -> list[Emit]:
        def outcome_of(
            user: str, requests: list[Pending], snapshot: Snapshot, now: datetime
        ) -> tuple[UserOutcome, None]:
            outcome = decide_user(
                user,
                requests,
                snapshot.ledgers[user],
                snapshot.records,
                self.budgets.get(user),
                now=now,
                catalog=self.catalog,
                config=self.config,
            )
            return outcome, None

        rounds = await commit_by_user(
            self.store, pending, lambda p: p.request.request_id, outcome_of, self.clock
        )
        emits: list[Emit] = []
        for (outcome, _), committed in rounds:
            outcome.count()
            emits.extend(outcome.emits)
            key = outcome.commit.user_id.encode()
            emits.extend(
                Emit(AI_RESPONSES, key, committed.answers[op.ref])
                for op in outcome.commit.ops
                if isinstance(op, Wait) and op.ref in committed.answers
            )
        return emits

    async def close(self) -> None:
        return None


class Settling:
    """The settle flow's sink: applies the settlements in Redis, then answers the waiting
    duplicates."""

    def __init__(self, store: RouterStore, publish: Publish, clock: Clock = utc_now) -> None:
        self.store = store
        self.publish = publish
        self.clock = clock

    async def write(self, batch: list[Received[RouterSettlement]]) -> None:
        todo: dict[str, list[RouterSettlement]] = {}
        for received in batch:
            todo.setdefault(received.event.user_id, []).append(received.event)
        with PROCESSING_SECONDS.labels(agent="router-settle").time():
            emits = await self.settle(todo)
        if emits:
            await self.publish(emits)

    async def settle(self, todo: dict[str, list[RouterSettlement]]) -> list[Emit]:
        def outcome_of(
            user: str, settlements: list[RouterSettlement], snapshot: Snapshot, now: datetime
        ) -> tuple[UserOutcome, dict[str, bytes]]:
            return settle_user(user, settlements, snapshot.ledgers[user], snapshot.records, now=now)

        rounds = await commit_by_user(
            self.store, todo, lambda s: s.request_id, outcome_of, self.clock
        )
        emits: list[Emit] = []
        for (outcome, responses), committed in rounds:
            emits.extend(outcome.emits)
            key = outcome.commit.user_id.encode()
            for ref, response in responses.items():
                emits.extend(
                    Emit(AI_RESPONSES, key, response) for _ in range(committed.waiting.get(ref, 0))
                )
        return emits

    async def close(self) -> None:
        return None


def declare_decide(
    deciding: Deciding,
    dead_letter: DeadLetterWriter,
    fetch_wait_ms: int = DECIDE.fetch_wait_ms,
    flush: Flush = nothing_to_flush,
) -> Flow[AIRequest, DecideBatch]:
    """`flush`: what waits for the sends `deciding` did not wait for (`SendsInFlight`)."""
    return Flow(
        spec=replace(DECIDE, fetch_wait_ms=fetch_wait_ms),
        decode=decoder(AIRequest, AI_REQUESTS, AI_REQUESTS_READY),
        dead_letter=dead_letter,
        handle=sort_requests,
        sinks=[deciding],
        retryable=RETRYABLE,
        flush=flush,
        # The next batch is decided while the last one's commit is in flight: a batch read
        # again after a crash finds its requests' records in Redis and changes nothing.
        commit_behind=True,
    )


def declare_settle(
    settling: Settling,
    dead_letter: DeadLetterWriter,
    fetch_wait_ms: int = SETTLE.fetch_wait_ms,
    flush: Flush = nothing_to_flush,
) -> Flow[RouterSettlement, list[Received[RouterSettlement]]]:
    return Flow(
        spec=replace(SETTLE, fetch_wait_ms=fetch_wait_ms),
        decode=decoder(RouterSettlement, AI_ROUTER_SETTLEMENTS),
        dead_letter=dead_letter,
        handle=list,
        sinks=[settling],
        retryable=RETRYABLE,
        flush=flush,
        commit_behind=True,  # as decide: a settlement applied twice counts once
    )
