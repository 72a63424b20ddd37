"""The decide step around the pure policy: per-user ledgers and recent request ids kept in the
worker's tables (Faust tables keyed by user's partition; any mutable mapping in tests), and the
messages to send.

Only the worker that owns a user's partition runs these steps for that user, one event at a
time, so a read-modify-write of a ledger never races another: no lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from agents.router.budget_state import BudgetBook
from agents.router.policy import (
    LANE_OF_PRIORITY,
    PolicyConfig,
    Rejection,
    Route,
    UserLedger,
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
PRUNE_PER_EVENT = 50


@dataclass(frozen=True)
class Emit:
    spec: TopicSpec
    key: bytes
    value: bytes
    # The trace context to send with it; when empty, the current span's is sent (if any).
    headers: tuple[tuple[str, bytes], ...] = ()


def _response_emit(user_id: str, response: bytes) -> Emit:
    return Emit(AI_RESPONSES, user_id.encode(), response)


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


class Decider:
    def __init__(
        self,
        users: MutableMapping[Any, Any],
        requests: MutableMapping[Any, Any],
        budgets: BudgetBook,
        catalog: ModelCatalog,
        *,
        config: PolicyConfig,
        idempotency_window_s: float,
    ) -> None:
        self.users = users
        self.requests = requests
        self.budgets = budgets
        self.catalog = catalog
        self.config = config
        self.window_s = idempotency_window_s
        self._expiry: dict[int, deque[tuple[float, bytes]]] = {}

    def decide(self, request: AIRequest, partition: int, now: datetime) -> list[Emit]:
        self._prune(partition, now)
        request_key = request.request_id.encode()
        record = self._record(request_key, now)
        if record is not None:
            count_decision(request, None)
            if record["response"] is not None:
                return [_response_emit(request.user_id, orjson.dumps(record["response"]))]
            record["waiting"] += 1
            self.requests[request_key] = orjson.dumps(record)
            return []
        user_key = request.user_id.encode()
        ledger = UserLedger.loads(self.users.get(user_key))
        outcome = decide(
            request,
            ledger,
            self.budgets.get(request.user_id),
            now=now,
            catalog=self.catalog,
            config=self.config,
        )
        if outcome.ledger != ledger:
            self.users[user_key] = outcome.ledger.dumps()
        count_decision(request, outcome)
        if isinstance(outcome, Rejection):
            response = AIResponse(
                request_id=request.request_id,
                user_id=request.user_id,
                status=ResponseStatus.REJECTED,
                completed_at=now,
                error=outcome.error[:500],
                rationale=outcome.rationale,
            )
            count_response(response)
            raw = encode(response)
            self._remember(partition, request_key, now, raw)
            return [_response_emit(request.user_id, raw)]
        routed = RoutedRequest(
            request=request,
            lane=outcome.lane,
            chain=list(outcome.chain),
            estimated_cost_usd=outcome.estimated_cost_usd,
            rationale=outcome.rationale,
            decided_at=now,
            free_slot_day=outcome.free_slot_day,
        )
        self._remember(partition, request_key, now, None)
        return [Emit(LANE_TOPICS[outcome.lane], user_key, encode(routed))]

    def settle(self, settlement: RouterSettlement, partition: int, now: datetime) -> list[Emit]:
        """Keep the response for replay, answer duplicates that waited for it, and apply the
        ledger changes once (a redelivered settlement finds the response already kept)."""
        request_key = settlement.request_id.encode()
        raw = self.requests.get(request_key)
        record = orjson.loads(raw) if raw else None
        if record is not None and record["response"] is not None:
            return []
        user_key = settlement.user_id.encode()
        ledger = UserLedger.loads(self.users.get(user_key))
        settled = settle(ledger, settlement, now)
        if settled != ledger:
            self.users[user_key] = settled.dumps()
        response = encode(settlement.response)
        waiting = record["waiting"] if record is not None else 0
        if record is None:
            self._remember(partition, request_key, now, response)
        else:
            record["response"] = orjson.loads(response)
            self.requests[request_key] = orjson.dumps(record)
        return [_response_emit(settlement.user_id, response) for _ in range(waiting)]

    def _record(self, request_key: bytes, now: datetime) -> dict[str, Any] | None:
        raw = self.requests.get(request_key)
        if not raw:
            return None
        record: dict[str, Any] = orjson.loads(raw)
        if now.timestamp() - record["seen"] > self.window_s:
            return None
        return record

    def _remember(
        self, partition: int, request_key: bytes, now: datetime, response: bytes | None
    ) -> None:
        seen = now.timestamp()
        record = {
            "seen": seen,
            "waiting": 0,
            "response": orjson.loads(response) if response is not None else None,
        }
        self.requests[request_key] = orjson.dumps(record)
        self._expiry.setdefault(partition, deque()).append((seen, request_key))

    def _prune(self, partition: int, now: datetime) -> None:
        """Forget request ids older than the window, a few per event, in the partition being
        processed (a table deletion is logged to the current event's partition)."""
        queue = self._expiry.get(partition)
        horizon = now.timestamp() - self.window_s
        pruned = 0
        while queue and queue[0][0] < horizon and pruned < PRUNE_PER_EVENT:
            seen, request_key = queue.popleft()
            raw = self.requests.get(request_key)
            if raw and orjson.loads(raw)["seen"] == seen:
                del self.requests[request_key]
            pruned += 1
