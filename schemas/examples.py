"""A valid example of each family for docs, the demo and tests.

`example(UsageEvent, user_id="u-7")` overrides any field.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from schemas.events import (
    AIRequest,
    AIResponse,
    BudgetAlert,
    BudgetState,
    CacheInvalidation,
    Event,
    RoutedRequest,
    RouterSettlement,
    UsageEvent,
    WorldEvent,
    WorldTick,
)

E = TypeVar("E", bound=Event)


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _fields(model: type[Event], now: datetime) -> dict[str, Any]:
    if model is AIRequest:
        return {
            "request_id": _id("req"),
            "user_id": "user-1",
            "kind": "text",
            "priority": "normal",
            "prompt": "Describe the tavern at dusk.",
            "user_tier": "free",
            "created_at": now,
        }
    if model is AIResponse:
        return {
            "request_id": _id("req"),
            "user_id": "user-1",
            "status": "ok",
            "completed_at": now,
            "model": "gemini-2.5-flash",
            "output": "...",
        }
    if model is UsageEvent:
        return {
            "event_id": _id("use"),
            "request_id": _id("req"),
            "user_id": "user-1",
            "service": "gemini",
            "model": "gemini-2.5-flash",
            "input_tokens": 120,
            "output_tokens": 480,
            "images": 0,
            "free_tier": False,
            "occurred_at": now,
            "cost_usd": Decimal("0.0012345"),
        }
    if model is WorldEvent:
        return {
            "event_id": _id("wev"),
            "world_id": "world-1",
            "type": "memory_recorded",
            "payload": {"content": "Rain drummed on the tavern roof all evening."},
            "occurred_at": now,
        }
    if model is WorldTick:
        return {"world_id": "world-1", "tick": 1, "occurred_at": now}
    if model is CacheInvalidation:
        return {
            "id": _id("inv"),
            "keys": ["world:world-1"],
            "reason": "world changed",
            "occurred_at": now,
        }
    if model is BudgetAlert:
        return {
            "alert_id": _id("alert"),
            "user_id": "user-1",
            "month": now.date().replace(day=1),
            "threshold_pct": 80,
            "budget_usd": Decimal("10"),
            "spent_usd": Decimal("8.01"),
            "occurred_at": now,
        }
    if model is BudgetState:
        return {
            "user_id": "user-1",
            "month": now.date().replace(day=1),
            "budget_usd": Decimal("10"),
            "spent_usd": Decimal("8.01"),
            "remaining_usd": Decimal("1.99"),
            "exhausted": False,
            "thresholds_reached": [50, 80],
            "version": 1,
            "updated_at": now,
        }
    if model is RoutedRequest:
        return {
            "request": _fields(AIRequest, now),
            "lane": "normal",
            "chain": [
                {
                    "service": "gemini",
                    "model": "gemini-2.5-flash",
                    "free_tier": False,
                    "estimated_cost_usd": Decimal("0.0012"),
                }
            ],
            "estimated_cost_usd": Decimal("0.0012"),
            "rationale": "normal priority, simple prompt: flash",
            "decided_at": now,
        }
    if model is RouterSettlement:
        return {
            "request_id": _id("req"),
            "user_id": "user-1",
            "response": _fields(AIResponse, now),
            "estimated_cost_usd": Decimal("0.0012"),
            "actual_cost_usd": Decimal("0.0011"),
        }
    raise LookupError(f"no example for {model.__name__}")


def example(model: type[E], /, **overrides: Any) -> E:
    now = datetime.now(UTC).replace(microsecond=0)
    return model.model_validate({**_fields(model, now), **overrides})
