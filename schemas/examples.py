"""A valid example of each family for docs, the demo and tests.

`example(UsageEvent, user_id="u-7")` overrides any field; `world_event_examples()` gives one
world event of each type, in an order a fresh world accepts.
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
    """A valid `model`; a world event of another `type` gets that type's example payload."""
    now = datetime.now(UTC).replace(microsecond=0)
    fields = _fields(model, now)
    if model is WorldEvent and "type" in overrides:
        fields["payload"] = WORLD_PAYLOAD_EXAMPLES.get(overrides["type"], fields["payload"])
    return model.model_validate({**fields, **overrides})


# One payload per world event type; applied in this order, each fits the world the ones
# before it made (the village template brings npc-1, the tavern and the guild).
WORLD_PAYLOAD_EXAMPLES: dict[str, dict[str, Any]] = {
    "world_loaded": {"name": "Emberfall", "template": "village"},
    "location_created": {"location_id": "well", "name": "Village Well", "kind": "square"},
    "npc_created": {"npc_id": "npc-40", "name": "Ysolde", "location_id": "well"},
    "npc_moved": {"npc_id": "npc-40", "location_id": "tavern"},
    "item_created": {
        "item_id": "lantern-1",
        "name": "Brass lantern",
        "value": 12,
        "owner_id": "npc-40",
    },
    "faction_changed": {"faction_id": "guild", "join": ["npc-40"], "treasury_delta": 25},
    "memory_recorded": {
        "npc_id": "npc-40",
        "content": "Ysolde lit the lantern at the well.",
        "importance": 6,
    },
    "relationship_changed": {"npc_id": "npc-40", "other_npc_id": "npc-1", "delta": 10},
    "world_unloaded": {},
}


def world_event_examples(world_id: str = "world-1") -> list[WorldEvent]:
    """A valid world event of every type, in an order a fresh world accepts."""
    return [
        example(WorldEvent, world_id=world_id, type=type_, payload=payload)
        for type_, payload in WORLD_PAYLOAD_EXAMPLES.items()
    ]
