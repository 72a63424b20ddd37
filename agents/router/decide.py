"""Decide and settle for one user, pure: from the user's stored ledger and the records of the
request ids in hand (`agents.router.ledger_store`), what to commit and what to send once the
commit holds. The flows (`agents.router.decide_flow`) read, call these, commit, and read and
decide again the users whose state moved meanwhile.

A request id seen before changes no ledger: the same record read again (a redelivery) sends
what its decision sent; a duplicate gets the stored response, or waits for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from agents.router.ledger_store import (
    Create,
    RequestRecord,
    Settle,
    StoredLedger,
    UserCommit,
    Wait,
)
from agents.router.policy import (
    LANE_OF_PRIORITY,
    Budget,
    PolicyConfig,
    Rejection,
    Route,
    decide,
    settle,
)
from runtime.metrics import FREE_TIER_REQUESTS, RESPONSES, ROUTING_DECISIONS
from schemas import encode
from schemas.events import (
    AIRequest,
    AIResponse,
    Lane,
    ResponseStatus,
    RoutedRequest,
    RouterSettlement,
)
from schemas.model_catalog import ModelCatalog
from topics.catalog import (
    AI_LANE_DEFERRED,
    AI_LANE_NORMAL,
    AI_LANE_URGENT,
    AI_RESPONSES,
    TopicSpec,
)

LANE_TOPICS = {
    Lane.URGENT: AI_LANE_URGENT,
    Lane.NORMAL: AI_LANE_NORMAL,
    Lane.DEFERRED: AI_LANE_DEFERRED,
}
# Where a stored decision was sent, by topic name.
DECISION_TOPICS = {spec.name: spec for spec in (*LANE_TOPICS.values(), AI_RESPONSES)}


@dataclass(frozen=True)
class Emit:
    spec: TopicSpec
    key: bytes
    value: bytes
    # The trace context to send with it; when empty, the current span's is sent (if any).
    headers: tuple[tuple[str, bytes], ...] = ()
    # On a lane message of a decision this batch committed (nothing can have run it yet): the
    # decision itself, so it can be run at once without reading `value` back.
    decided_now: RoutedRequest | None = None


@dataclass(frozen=True)
class Pending:
    """A request to decide, from `origin` ("topic/partition/offset": a redelivery of the same
    record has the same origin), with the trace headers its lane message carries on."""

    request: AIRequest
    origin: str
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class UserOutcome:
    """One user's part of a batch: `commit`, and once it holds, `emits` plus the response of
    each `Wait` the commit answered; the counts to add then."""

    commit: UserCommit
    emits: list[Emit] = field(default_factory=list)
    decisions: list[tuple[AIRequest, Route | Rejection | None]] = field(default_factory=list)
    responses: list[AIResponse] = field(default_factory=list)

    @property
    def writes(self) -> bool:
        return self.commit.ledger is not None or bool(self.commit.ops)

    def count(self) -> None:
        for request, outcome in self.decisions:
            count_decision(request, outcome)
        for response in self.responses:
            count_response(response)


def count_response(response: AIResponse) -> None:
    RESPONSES.labels(status=response.status.value, free_tier=str(bool(response.free_tier))).inc()


def count_decision(request: AIRequest, outcome: Route | Rejection | None) -> None:
    """One routing decision (None: the request was seen before), and the free-image quota
    check it made, if any."""
    if outcome is None:
        lane, route = LANE_OF_PRIORITY[request.priority], "deduplicated"
    elif isinstance(outcome, Rejection):
        lane, route = LANE_OF_PRIORITY[request.priority], "rejected"
    else:
        lane, route = outcome.lane, "free" if outcome.chain[0].free_tier else "paid"
    ROUTING_DECISIONS.labels(lane=lane.value, kind=request.kind.value, route=route).inc()
    quota = outcome.free_quota if outcome is not None else None
    if quota is not None:
        FREE_TIER_REQUESTS.labels(
            provider=quota.provider, outcome="granted" if quota.granted else "exhausted"
        ).inc()


def replay(record: RequestRecord, user_key: bytes) -> list[Emit]:
    """What a redelivered record sends again: its decision, unless that was a lane message
    already answered (the lane then skips it anyway)."""
    if record.settled and record.topic != AI_RESPONSES.name:
        return []
    spec = DECISION_TOPICS.get(record.topic)
    return [Emit(spec, user_key, record.message)] if spec is not None else []


def decide_user(
    user_id: str,
    pending: list[Pending],
    stored: StoredLedger,
    records: Mapping[str, RequestRecord | None],
    budget: Budget | None,
    *,
    now: datetime,
    catalog: ModelCatalog,
    config: PolicyConfig,
) -> UserOutcome:
    """Decide `pending` (one user's requests, in offset order) from the stored state."""
    user_key = user_id.encode()
    outcome = UserOutcome(UserCommit(user_id, stored.version, None))
    ledger = stored.ledger
    created: dict[str, Create] = {}
    for item in pending:
        request, request_id = item.request, item.request.request_id
        if request_id in created:  # a duplicate within the batch
            first = created[request_id]
            outcome.decisions.append((request, None))
            if first.record.response is not None:
                outcome.emits.append(Emit(AI_RESPONSES, user_key, first.record.response))
            else:
                created[request_id] = replace(first, waiting=(*first.waiting, item.origin))
            continue
        record = records.get(request_id)
        if record is not None and record.origin == item.origin:
            outcome.emits.extend(replay(record, user_key))
            continue
        if record is not None:
            outcome.decisions.append((request, None))
            if record.response is not None:
                outcome.emits.append(Emit(AI_RESPONSES, user_key, record.response))
            else:
                outcome.commit.ops.append(Wait(item.origin, request_id, item.origin))
            continue
        decided = decide(request, ledger, budget, now=now, catalog=catalog, config=config)
        ledger = decided.ledger
        outcome.decisions.append((request, decided))
        if isinstance(decided, Rejection):
            response = AIResponse(
                request_id=request_id,
                user_id=request.user_id,
                status=ResponseStatus.REJECTED,
                completed_at=now,
                error=decided.error[:500],
                rationale=decided.rationale,
                refusal=decided.refusal,
            )
            outcome.responses.append(response)
            raw = encode(response)
            created[request_id] = Create(
                request_id, RequestRecord(item.origin, AI_RESPONSES.name, raw, raw, True)
            )
            outcome.emits.append(Emit(AI_RESPONSES, user_key, raw))
            continue
        routed = RoutedRequest(
            request=request,
            lane=decided.lane,
            chain=list(decided.chain),
            estimated_cost_usd=decided.estimated_cost_usd,
            rationale=decided.rationale,
            decided_at=now,
            free_slot_day=decided.free_slot_day,
        )
        spec = LANE_TOPICS[decided.lane]
        raw = encode(routed)
        created[request_id] = Create(request_id, RequestRecord(item.origin, spec.name, raw))
        outcome.emits.append(Emit(spec, user_key, raw, item.headers, decided_now=routed))
    outcome.commit.ops[:0] = list(created.values())
    if ledger != stored.ledger:
        outcome.commit.ledger = ledger
    return outcome


def settle_user(
    user_id: str,
    settlements: list[RouterSettlement],
    stored: StoredLedger,
    records: Mapping[str, RequestRecord | None],
    *,
    now: datetime,
) -> tuple[UserOutcome, dict[str, bytes]]:
    """Apply each settlement to the ledger once per request id, keeping its response; the
    duplicates that waited get the response once the commit says how many there are
    (returned: Settle.ref -> response). A settlement read again answers them again."""
    user_key = user_id.encode()
    outcome = UserOutcome(UserCommit(user_id, stored.version, None))
    ledger = stored.ledger
    answers: dict[str, bytes] = {}
    for settlement in settlements:
        request_id = settlement.request_id
        if request_id in answers:
            continue
        response = encode(settlement.response)
        record = records.get(request_id)
        if record is not None and record.settled:
            kept = record.response or response
            outcome.emits.extend(Emit(AI_RESPONSES, user_key, kept) for _ in range(record.waiting))
            answers[request_id] = kept
            continue
        ledger = settle(ledger, settlement, now)
        outcome.commit.ops.append(Settle(request_id, request_id, response))
        answers[request_id] = response
    if ledger != stored.ledger:
        outcome.commit.ledger = ledger
    pending = {op.ref: answers[op.ref] for op in outcome.commit.ops if isinstance(op, Settle)}
    return outcome, pending
